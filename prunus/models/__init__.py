"""The model zoo: a registry of CNN factories built by name.

Importing this package registers every family (CIFAR ResNets, VGG-16-BN, MobileNetV2, LeNets).
`timm:NAME` names a timm model wherever a model name is taken (`prunus.models.timm_models`; the
optional extra `prunus[timm]`).
Each model declares its stem and classifier, which pruning skips by default, and records how to
rebuild itself; both are in its `prunus.models.info.ModelInfo`.

Example:
    >>> from prunus.models import create_model, list_models
    >>> from prunus.models.info import get_info
    >>> list_models("resnet*")
    ['resnet110', 'resnet20', 'resnet32', 'resnet56']
    >>> model = create_model("resnet56", num_classes=10, in_channels=1, width_mult=0.5)
    >>> get_info(model).arch["kwargs"]["width_mult"], get_info(model).ignored
    (0.5, ('conv1', 'fc'))
"""

from prunus.models import lenet as lenet
from prunus.models import mobilenetv2 as mobilenetv2
from prunus.models import resnet as resnet
from prunus.models import vgg as vgg
from prunus.models._registry import MODELS as MODELS
from prunus.models._registry import check_model_name as check_model_name
from prunus.models._registry import create_model as create_model
from prunus.models._registry import get_model_entry as get_model_entry
from prunus.models._registry import list_models as list_models
from prunus.models._registry import register_model as register_model

__all__ = ["MODELS", "check_model_name", "create_model", "get_model_entry", "list_models", "register_model"]
