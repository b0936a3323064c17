"""ML-From-Scratch's ``deep_learning/layers.py``: the layers a CNN uses.

Kept as published, bugs included: ``determine_padding`` returns None for
anything but "same" and "valid", so both pooling layers (default padding 0,
and a literal 0 in their backward pass) fail with TypeError unless a test
patches it; ``PoolingLayer.output_shape`` ignores padding and asserts that
the pool tiles the input. The im2col helpers are module globals looked up
at call time, as in the original.
"""

import copy
import math

import numpy as np

from .activation_functions import ReLU, Softmax

activation_functions = {"relu": ReLU, "softmax": Softmax}


def determine_padding(filter_shape, output_shape="same"):
    if output_shape == "valid":
        return (0, 0), (0, 0)
    elif output_shape == "same":
        fh, fw = filter_shape
        pad_top, pad_bottom = int(math.floor((fh - 1) / 2)), int(math.ceil((fh - 1) / 2))
        pad_left, pad_right = int(math.floor((fw - 1) / 2)), int(math.ceil((fw - 1) / 2))
        return (pad_top, pad_bottom), (pad_left, pad_right)


_published_determine_padding = determine_padding


def determine_padding_fixed(filter_shape, output_shape="same"):
    """The one fix the pooling layers need, 0 read as "valid": tests and
    benchmarks patch it in as ``determine_padding`` to compare with them."""
    return _published_determine_padding(filter_shape, "valid" if output_shape == 0 else output_shape)


def get_im2col_indices(images_shape, filter_shape, padding, stride=1):
    batch_size, channels, height, width = images_shape
    fh, fw = filter_shape
    pad_h, pad_w = padding
    out_height = int((height + np.sum(pad_h) - fh) / stride + 1)
    out_width = int((width + np.sum(pad_w) - fw) / stride + 1)
    cell_i, cell_j = np.meshgrid(np.arange(fh), np.arange(fw), indexing="ij")
    cell_i = np.tile(cell_i.ravel(), channels)
    cell_j = np.tile(cell_j.ravel(), channels)
    pos_i, pos_j = np.meshgrid(np.arange(out_height), np.arange(out_width), indexing="ij")
    i = cell_i[:, None] + stride * pos_i.ravel()[None, :]
    j = cell_j[:, None] + stride * pos_j.ravel()[None, :]
    k = np.repeat(np.arange(channels), fh * fw)[:, None]
    return k, i, j


def image_to_column(images, filter_shape, stride, output_shape="same"):
    pad_h, pad_w = determine_padding(filter_shape, output_shape)
    images_padded = np.pad(images, ((0, 0), (0, 0), pad_h, pad_w), mode="constant")
    k, i, j = get_im2col_indices(images.shape, filter_shape, (pad_h, pad_w), stride)
    cols = images_padded[:, k, i, j]
    return cols.transpose(1, 2, 0).reshape(filter_shape[0] * filter_shape[1] * images.shape[1], -1)


def column_to_image(cols, images_shape, filter_shape, stride, output_shape="same"):
    batch_size, channels, height, width = images_shape
    pad_h, pad_w = determine_padding(filter_shape, output_shape)
    images_padded = np.zeros((batch_size, channels, height + np.sum(pad_h), width + np.sum(pad_w)))
    k, i, j = get_im2col_indices(images_shape, filter_shape, (pad_h, pad_w), stride)
    cols = cols.reshape(channels * np.prod(filter_shape), -1, batch_size).transpose(2, 0, 1)
    np.add.at(images_padded, (slice(None), k, i, j), cols)
    return images_padded[:, :, pad_h[0]:height + pad_h[0], pad_w[0]:width + pad_w[0]]


class Layer:
    def set_input_shape(self, shape):
        self.input_shape = shape

    def layer_name(self):
        return self.__class__.__name__

    def parameters(self):
        return 0


class Dense(Layer):
    def __init__(self, n_units, input_shape=None):
        self.layer_input = None
        self.input_shape = input_shape
        self.n_units = n_units
        self.trainable = True

    def initialize(self, optimizer):
        limit = 1 / math.sqrt(self.input_shape[0])
        self.W = np.random.uniform(-limit, limit, (self.input_shape[0], self.n_units))
        self.w0 = np.zeros((1, self.n_units))
        self.W_opt, self.w0_opt = copy.copy(optimizer), copy.copy(optimizer)

    def parameters(self):
        return np.prod(self.W.shape) + np.prod(self.w0.shape)

    def forward_pass(self, X, training=True):
        self.layer_input = X
        return X.dot(self.W) + self.w0

    def backward_pass(self, accum_grad):
        W = self.W
        if self.trainable:
            grad_w = self.layer_input.T.dot(accum_grad)
            grad_w0 = np.sum(accum_grad, axis=0, keepdims=True)
            self.W = self.W_opt.update(self.W, grad_w)
            self.w0 = self.w0_opt.update(self.w0, grad_w0)
        return accum_grad.dot(W.T)

    def output_shape(self):
        return (self.n_units,)


class Conv2D(Layer):
    def __init__(self, n_filters, filter_shape, input_shape=None, padding="same", stride=1):
        self.n_filters = n_filters
        self.filter_shape = filter_shape
        self.padding = padding
        self.stride = stride
        self.input_shape = input_shape
        self.trainable = True

    def initialize(self, optimizer):
        fh, fw = self.filter_shape
        limit = 1 / math.sqrt(np.prod(self.filter_shape))
        shape = (self.n_filters, self.input_shape[0], fh, fw)
        self.W = np.random.uniform(-limit, limit, size=shape)
        self.w0 = np.zeros((self.n_filters, 1))
        self.W_opt, self.w0_opt = copy.copy(optimizer), copy.copy(optimizer)

    def parameters(self):
        return np.prod(self.W.shape) + np.prod(self.w0.shape)

    def forward_pass(self, X, training=True):
        batch_size = X.shape[0]
        self.layer_input = X
        self.X_col = image_to_column(X, self.filter_shape, stride=self.stride,
                                     output_shape=self.padding)
        self.W_col = self.W.reshape((self.n_filters, -1))
        output = self.W_col.dot(self.X_col) + self.w0
        return output.reshape(self.output_shape() + (batch_size,)).transpose(3, 0, 1, 2)

    def backward_pass(self, accum_grad):
        accum_grad = accum_grad.transpose(1, 2, 3, 0).reshape(self.n_filters, -1)
        if self.trainable:
            grad_w = accum_grad.dot(self.X_col.T).reshape(self.W.shape)
            grad_w0 = np.sum(accum_grad, axis=1, keepdims=True)
            self.W = self.W_opt.update(self.W, grad_w)
            self.w0 = self.w0_opt.update(self.w0, grad_w0)
        accum_grad = self.W_col.T.dot(accum_grad)
        return column_to_image(accum_grad, self.layer_input.shape, self.filter_shape,
                               stride=self.stride, output_shape=self.padding)

    def output_shape(self):
        channels, height, width = self.input_shape
        pad_h, pad_w = determine_padding(self.filter_shape, output_shape=self.padding)
        out_h = (height + np.sum(pad_h) - self.filter_shape[0]) / self.stride + 1
        out_w = (width + np.sum(pad_w) - self.filter_shape[1]) / self.stride + 1
        return self.n_filters, int(out_h), int(out_w)


class BatchNormalization(Layer):
    def __init__(self, momentum=0.99):
        self.momentum = momentum
        self.trainable = True
        self.eps = 0.01
        self.running_mean = None
        self.running_var = None

    def initialize(self, optimizer):
        self.gamma = np.ones(self.input_shape)
        self.beta = np.zeros(self.input_shape)
        self.gamma_opt, self.beta_opt = copy.copy(optimizer), copy.copy(optimizer)

    def parameters(self):
        return np.prod(self.gamma.shape) + np.prod(self.beta.shape)

    def forward_pass(self, X, training=True):
        if self.running_mean is None:
            self.running_mean = np.mean(X, axis=0)
            self.running_var = np.var(X, axis=0)
        if training and self.trainable:
            mean, var = np.mean(X, axis=0), np.var(X, axis=0)
            self.running_mean = self.momentum * self.running_mean + (1 - self.momentum) * mean
            self.running_var = self.momentum * self.running_var + (1 - self.momentum) * var
        else:
            mean, var = self.running_mean, self.running_var
        self.X_centered = X - mean
        self.stddev_inv = 1 / np.sqrt(var + self.eps)
        return self.gamma * (self.X_centered * self.stddev_inv) + self.beta

    def backward_pass(self, accum_grad):
        gamma = self.gamma
        if self.trainable:
            X_norm = self.X_centered * self.stddev_inv
            self.gamma = self.gamma_opt.update(self.gamma, np.sum(accum_grad * X_norm, axis=0))
            self.beta = self.beta_opt.update(self.beta, np.sum(accum_grad, axis=0))
        batch_size = accum_grad.shape[0]
        return (1 / batch_size) * gamma * self.stddev_inv * (
            batch_size * accum_grad
            - np.sum(accum_grad, axis=0)
            - self.X_centered * self.stddev_inv**2 * np.sum(accum_grad * self.X_centered, axis=0)
        )

    def output_shape(self):
        return self.input_shape


class PoolingLayer(Layer):
    def __init__(self, pool_shape=(2, 2), stride=1, padding=0):
        self.pool_shape = pool_shape
        self.stride = stride
        self.padding = padding
        self.trainable = True

    def forward_pass(self, X, training=True):
        self.layer_input = X
        batch_size, channels, height, width = X.shape
        _, out_height, out_width = self.output_shape()
        X = X.reshape(batch_size * channels, 1, height, width)
        X_col = image_to_column(X, self.pool_shape, self.stride, self.padding)
        output = self._pool_forward(X_col)
        return output.reshape(out_height, out_width, batch_size, channels).transpose(2, 3, 0, 1)

    def backward_pass(self, accum_grad):
        batch_size = accum_grad.shape[0]
        channels, height, width = self.input_shape
        accum_grad = self._pool_backward(accum_grad.transpose(2, 3, 0, 1).ravel())
        accum_grad = column_to_image(accum_grad, (batch_size * channels, 1, height, width),
                                     self.pool_shape, self.stride, 0)
        return accum_grad.reshape((batch_size,) + self.input_shape)

    def output_shape(self):
        channels, height, width = self.input_shape
        out_height = (height - self.pool_shape[0]) / self.stride + 1
        out_width = (width - self.pool_shape[1]) / self.stride + 1
        assert out_height % 1 == 0
        assert out_width % 1 == 0
        return channels, int(out_height), int(out_width)


class MaxPooling2D(PoolingLayer):
    def _pool_forward(self, X_col):
        arg_max = np.argmax(X_col, axis=0).flatten()
        self.cache = arg_max
        return X_col[arg_max, range(arg_max.size)]

    def _pool_backward(self, accum_grad):
        accum_grad_col = np.zeros((np.prod(self.pool_shape), accum_grad.size))
        accum_grad_col[self.cache, range(accum_grad.size)] = accum_grad
        return accum_grad_col


class AveragePooling2D(PoolingLayer):
    def _pool_forward(self, X_col):
        return np.mean(X_col, axis=0)

    def _pool_backward(self, accum_grad):
        accum_grad_col = np.zeros((np.prod(self.pool_shape), accum_grad.size))
        accum_grad_col[:, range(accum_grad.size)] = 1.0 / accum_grad_col.shape[0] * accum_grad
        return accum_grad_col


class Flatten(Layer):
    def __init__(self, input_shape=None):
        self.prev_shape = None
        self.trainable = True
        self.input_shape = input_shape

    def forward_pass(self, X, training=True):
        self.prev_shape = X.shape
        return X.reshape((X.shape[0], -1))

    def backward_pass(self, accum_grad):
        return accum_grad.reshape(self.prev_shape)

    def output_shape(self):
        return (np.prod(self.input_shape),)


class Dropout(Layer):
    def __init__(self, p=0.2):
        self.p = p
        self._mask = None
        self.input_shape = None
        self.trainable = True

    def forward_pass(self, X, training=True):
        c = 1 - self.p
        if training:
            self._mask = np.random.uniform(size=X.shape) > self.p
            c = self._mask
        return X * c

    def backward_pass(self, accum_grad):
        return accum_grad * self._mask

    def output_shape(self):
        return self.input_shape


class Activation(Layer):
    def __init__(self, name):
        self.activation_name = name
        self.activation_func = activation_functions[name]()
        self.trainable = True

    def layer_name(self):
        return "Activation (%s)" % self.activation_func.__class__.__name__

    def forward_pass(self, X, training=True):
        self.layer_input = X
        return self.activation_func(X)

    def backward_pass(self, accum_grad):
        return accum_grad * self.activation_func.gradient(self.layer_input)

    def output_shape(self):
        return self.input_shape
