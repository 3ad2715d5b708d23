"""The artifact README's MediaPipe Tasks section: Android (Kotlin: MediaPipe ImageClassifier,
and LiteRT's Interpreter for raw control) and iOS (Swift: MediaPipe ImageClassifier) code for
the Tasks-ready variant, generated from the manifest so asset name, labels, input size and
decision rule always match the shipped file (pure functions; the bundle calls readme_section).
"""

from __future__ import annotations

import json
from pathlib import Path

MEDIAPIPE_VERSION = "0.10.21"  # the release the tests run the variant with


def snippet_values(manifest: dict) -> dict:
    """Everything the snippets name, read from the manifest."""
    tv = manifest["tasks_variant"]
    names = list(manifest["class_names"])
    decision = manifest.get("decision") or {}  # the operating point run.py applies, if any
    return {
        "file": tv["file"],
        "stem": Path(tv["file"]).stem,
        "labels": names,
        "size": int(tv["input"]["shape"][1]),
        "n": len(names),
        "positive": decision.get("positive_class"),
        "threshold": float(decision["threshold"]) if decision else None,
    }


def decision_rule_text(v: dict) -> str:
    if v["positive"] is None:
        return "the top class (scores are probabilities)"
    return (
        f"{v['positive']} when its probability is >= {v['threshold']:.4f} (the build's operating point, "
        "chosen on validation), else the most probable other class: what `run.py predict` prints"
    )


def kotlin_label(v: dict) -> str:
    """A Kotlin function: run.py's decision rule over probabilities in LABELS order."""
    if v["positive"] is None:
        return """    /** run.py's rule: the most probable class. */
    fun label(probs: FloatArray): String = LABELS[probs.indices.maxByOrNull { probs[it] }!!]"""
    return f"""    /** run.py's rule: {v["positive"]} at p >= {v["threshold"]:.4f}, else the most probable other class. */
    fun label(probs: FloatArray): String {{
        val pos = LABELS.indexOf("{v["positive"]}")
        if (probs[pos] >= {v["threshold"]:.6f}f) return LABELS[pos]
        return LABELS[probs.indices.filter {{ it != pos }}.maxByOrNull {{ probs[it] }}!!]
    }}"""


def kotlin_mediapipe(v: dict) -> str:
    labels = ", ".join(json.dumps(n) for n in v["labels"])
    return f"""```kotlin
// app/build.gradle.kts: implementation("com.google.mediapipe:tasks-vision:{MEDIAPIPE_VERSION}")
// and copy {v["file"]} into app/src/main/assets/
import android.content.Context
import android.graphics.Bitmap
import com.google.mediapipe.framework.image.BitmapImageBuilder
import com.google.mediapipe.tasks.core.BaseOptions
import com.google.mediapipe.tasks.vision.core.RunningMode
import com.google.mediapipe.tasks.vision.imageclassifier.ImageClassifier

class XrayTasksClassifier(context: Context) : AutoCloseable {{
    companion object {{
        const val MODEL = "{v["file"]}"
        const val SIZE = {v["size"]}   // the model's input side; MediaPipe resizes to it
        val LABELS = listOf({labels})   // also inside the model (metadata), in this order
    }}

    private val classifier = ImageClassifier.createFromOptions(
        context,
        ImageClassifier.ImageClassifierOptions.builder()
            .setBaseOptions(BaseOptions.builder().setModelAssetPath(MODEL).build())
            .setRunningMode(RunningMode.IMAGE)
            .setMaxResults(LABELS.size)   // every class's probability
            .build())

    /** (label, probabilities in LABELS order). Gray or color bitmaps alike. */
    fun classify(bitmap: Bitmap): Pair<String, FloatArray> {{
        // scaling with filtering first comes closest to run.py's antialiased resize
        val scaled = Bitmap.createScaledBitmap(bitmap, SIZE, SIZE, true)
        val result = classifier.classify(BitmapImageBuilder(scaled).build())
        val probs = FloatArray(LABELS.size)
        for (c in result.classificationResult().classifications()[0].categories()) {{
            probs[LABELS.indexOf(c.categoryName())] = c.score()
        }}
        return label(probs) to probs
    }}

{kotlin_label(v)}

    override fun close() = classifier.close()
}}
```"""


def kotlin_interpreter(v: dict) -> str:
    labels = ", ".join(json.dumps(n) for n in v["labels"])
    return f"""```kotlin
// app/build.gradle.kts: implementation("com.google.ai.edge.litert:litert:1.4.1")
import android.content.Context
import android.graphics.Bitmap
import org.tensorflow.lite.Interpreter
import java.io.FileInputStream
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.nio.channels.FileChannel

/** {v["file"]} in LiteRT's Interpreter: RGB bytes in, probabilities out, nothing else to do. */
class XrayTasksInterpreter(context: Context) : AutoCloseable {{
    companion object {{
        const val MODEL = "{v["file"]}"
        const val SIZE = {v["size"]}
        val LABELS = listOf({labels})
    }}

    private val interpreter = context.assets.openFd(MODEL).use {{ fd ->
        FileInputStream(fd.fileDescriptor).channel.use {{
            Interpreter(it.map(FileChannel.MapMode.READ_ONLY, fd.startOffset, fd.declaredLength),
                        Interpreter.Options().setNumThreads(4))
        }}
    }}

    fun probabilities(bitmap: Bitmap): FloatArray {{
        val scaled = Bitmap.createScaledBitmap(bitmap, SIZE, SIZE, true)
        val pixels = IntArray(SIZE * SIZE)
        scaled.getPixels(pixels, 0, SIZE, 0, 0, SIZE, SIZE)
        val input = ByteBuffer.allocateDirect(SIZE * SIZE * 3).order(ByteOrder.nativeOrder())
        for (p in pixels) {{   // uint8 R, G, B: the model takes raw pixel values
            input.put((p shr 16 and 0xFF).toByte())
            input.put((p shr 8 and 0xFF).toByte())
            input.put((p and 0xFF).toByte())
        }}
        input.rewind()
        val output = Array(1) {{ FloatArray(LABELS.size) }}
        interpreter.run(input, output)
        return output[0]   // probabilities, in the order of LABELS
    }}

{kotlin_label(v)}

    override fun close() = interpreter.close()
}}
```"""


def swift_mediapipe(v: dict) -> str:
    labels = ", ".join(json.dumps(n) for n in v["labels"])
    return f"""```swift
// Podfile: pod 'MediaPipeTasksVision', '{MEDIAPIPE_VERSION}'; add {v["file"]} to the app target
import MediaPipeTasksVision
import UIKit

final class XrayTasksClassifier {{
    static let model = "{v["stem"]}"      // {v["file"]}
    static let size = {v["size"]}          // the model's input side; MediaPipe resizes to it
    static let labels = [{labels}]   // also inside the model (metadata)
    private let classifier: ImageClassifier

    init() throws {{
        let options = ImageClassifierOptions()
        options.baseOptions.modelAssetPath =
            Bundle.main.path(forResource: Self.model, ofType: "tflite")!
        options.runningMode = .image
        options.maxResults = Self.labels.count   // every class's probability
        classifier = try ImageClassifier(options: options)
    }}

    /// (label, probabilities in `labels` order); the label by run.py's rule.
    func classify(_ image: UIImage) throws -> (String, [Float]) {{
        let result = try classifier.classify(image: try MPImage(uiImage: image))
        var probs = [Float](repeating: 0, count: Self.labels.count)
        for c in result.classificationResult.classifications[0].categories {{
            if let i = Self.labels.firstIndex(of: c.categoryName ?? "") {{ probs[i] = c.score }}
        }}
        return (Self.label(probs), probs)
    }}

{swift_label(v)}
}}
```"""


def swift_label(v: dict) -> str:
    """A Swift function: run.py's decision rule over probabilities in `labels` order."""
    if v["positive"] is None:
        return """    /// run.py's rule: the most probable class.
    static func label(_ probs: [Float]) -> String {
        labels[probs.indices.max { probs[$0] < probs[$1] }!]
    }"""
    return f"""    /// run.py's rule: {v["positive"]} at p >= {v["threshold"]:.4f}, else the most probable other class.
    static func label(_ probs: [Float]) -> String {{
        let pos = labels.firstIndex(of: "{v["positive"]}")!
        if probs[pos] >= {v["threshold"]:.6f} {{ return labels[pos] }}
        return labels[probs.indices.filter {{ $0 != pos }}.max {{ probs[$0] < probs[$1] }}!]
    }}"""


def readme_section(manifest: dict) -> str:
    """The README section for the Tasks-ready variant (empty when the artifact has none)."""
    if not manifest.get("tasks_variant"):
        return ""
    v = snippet_values(manifest)
    role = (
        "the shipped model, Tasks-ready (`run.py` runs it too)"
        if v["file"] == manifest["model"]["file"]
        else "the Tasks-ready twin of the shipped model"
    )
    rule = decision_rule_text(v)
    return f"""
## MediaPipe Tasks and LiteRT Task Library: `{v["file"]}`

`{v["file"]}` is {role}: uint8 RGB `[1, {v["size"]}, {v["size"]}, 3]`
in (raw pixel values; a gray X-ray as R = G = B), float32 probabilities `[1, {v["n"]}]` out, full-INT8
compute inside (channel average, normalization and softmax are part of the model). Its TFLite
metadata names the classes ({", ".join(v["labels"])}), so MediaPipe's ImageClassifier reports
them by name; the decision is {rule}. MediaPipe stretches the image to {v["size"]}x{v["size"]}
with its own (bilinear) filter: scale the image yourself first, as below, to stay close to
`run.py`, which this file matches on top-1 (tested on real chest X-rays).

### Android (Kotlin, MediaPipe Tasks ImageClassifier)

{kotlin_mediapipe(v)}

### Android (Kotlin, LiteRT Interpreter, raw control)

{kotlin_interpreter(v)}

### iOS (Swift, MediaPipe Tasks ImageClassifier)

{swift_mediapipe(v)}

These snippets are generated from manifest.json; they were not compiled here (no Android SDK,
Kotlin or Swift toolchain on the build machine). The model file itself was run by MediaPipe
Tasks' ImageClassifier (Python, the same C++ task library) in edgexray's tests.
"""
