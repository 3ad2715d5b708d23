"""The torchvision-based families, registered next to the ResNets by edgexray.models.registry.

Each is plain, `_cbam` and `_se`, except EfficientNet (no `_se`: its blocks hold SE already).
Parameter names match torchvision's, so `tv_weights` and torchvision .pth files load.
"""

from __future__ import annotations

from edgexray.models import classic, densenet, mobile, squeezenet

NO_SE = (None, "cbam")


def register_all(register) -> None:
    # "vgg16" is VGG16 *with batch norm* (torchvision vgg16_bn); plain VGG16 trains poorly from scratch.
    register("vgg16", classic.vgg16, tv_weights="VGG16_BN_Weights.IMAGENET1K_V1")
    register("alexnet", classic.alexnet, tv_weights="AlexNet_Weights.IMAGENET1K_V1")
    register("mobilenet_v2", mobile.mobilenet_v2, tv_weights="MobileNet_V2_Weights.IMAGENET1K_V1")
    register(
        "efficientnet_b0",
        mobile.efficientnet_b0,
        attentions=NO_SE,
        tv_weights="EfficientNet_B0_Weights.IMAGENET1K_V1",
    )
    register(
        "efficientnet_b3",
        mobile.efficientnet_b3,
        attentions=NO_SE,
        tv_weights="EfficientNet_B3_Weights.IMAGENET1K_V1",
    )
    register(
        "shufflenet_v2_x1_0", mobile.shufflenet_v2_x1_0, tv_weights="ShuffleNet_V2_X1_0_Weights.IMAGENET1K_V1"
    )
    register("densenet121", densenet.densenet121, tv_weights="DenseNet121_Weights.IMAGENET1K_V1")
    register("squeezenet1_1", squeezenet.squeezenet1_1, tv_weights="SqueezeNet1_1_Weights.IMAGENET1K_V1")
