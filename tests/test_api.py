"""The public names of DESIGN.md are where the contract puts them."""

import importlib

import pytest

import fastcnn

FUNCTIONAL = ["im2col", "col2im", "conv2d", "conv2d_backward", "max_pool2d",
              "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward"]
LAYERS = ["Conv2D", "MaxPool2D", "AvgPool2D", "GlobalAvgPool2D", "Dense", "Flatten", "ReLU",
          "LeakyReLU", "Sigmoid", "Tanh", "ELU", "SELU", "Softplus", "Softmax", "BatchNorm1D",
          "BatchNorm2D", "Dropout"]
ELSEWHERE = {
    "fastcnn": ["Sequential", "get_backend", "set_backend", "use_backend", "get_num_threads",
                "set_num_threads", "show_config", "reference"],
    "fastcnn.losses": ["softmax_cross_entropy", "mse"],
    "fastcnn.optim": ["SGD", "Adagrad", "Adadelta", "RMSprop", "Adam"],
    "fastcnn.gradcheck": ["gradcheck"],
    "fastcnn.compat.cs231n": [
        f"{op}_{kind}" for op in ("conv_forward", "conv_backward", "max_pool_forward",
                                  "max_pool_backward") for kind in ("fast", "naive")
    ] + ["conv_forward_im2col", "max_pool_forward_reshape", "conv_relu_pool_forward",
         "conv_relu_pool_backward", "conv_relu_forward", "conv_relu_backward",
         "get_im2col_indices", "im2col_indices", "col2im_indices", "im2col_cython",
         "col2im_cython", "col2im_6d_cython"],
    "fastcnn.compat.hipsternet": [
        f"{layer}_{way}" for layer in ("conv", "maxpool", "avgpool", "fc", "relu", "lrelu",
                                       "sigmoid", "tanh", "dropout", "bn")
        for way in ("forward", "backward")
    ] + ["get_im2col_indices", "im2col_indices", "col2im_indices"],
    "fastcnn.compat.mlfromscratch": ["determine_padding", "get_im2col_indices", "image_to_column",
                                     "column_to_image", "Conv2D", "MaxPooling2D",
                                     "AveragePooling2D"],
    "fastcnn.reference": ["im2col", "col2im", "max_pool2d", "max_pool2d_backward",
                          "avg_pool2d", "avg_pool2d_backward"],
}


@pytest.mark.parametrize("name", FUNCTIONAL)
def test_functional_ops_are_reexported(name):
    assert getattr(fastcnn, name) is getattr(fastcnn.functional, name)


@pytest.mark.parametrize("name", LAYERS)
def test_layers_are_reexported(name):
    assert getattr(fastcnn, name) is getattr(fastcnn.layers, name)


@pytest.mark.parametrize("module, name", [(m, n) for m, names in ELSEWHERE.items() for n in names])
def test_other_public_names(module, name):
    assert callable(getattr(importlib.import_module(module), name)) or module == "fastcnn"
    assert hasattr(importlib.import_module(module), name)


def test_all_lists_only_what_exists():
    for name in fastcnn.__all__:
        assert hasattr(fastcnn, name), name
    assert set(FUNCTIONAL + LAYERS + ["Sequential"]) <= set(fastcnn.__all__)
