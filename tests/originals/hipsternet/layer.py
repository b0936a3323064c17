"""hipsternet's ``layer.py``: every layer as ``*_forward -> (out, cache)`` and ``*_backward``.

Pooling backward keeps the original's bug: it reads ``n, d, w, h = X.shape``
(H and W swapped), harmless for square inputs only.
"""

import numpy as np

# layer.py star-imports im2col.py: the trio is part of its namespace.
from .im2col import col2im_indices, get_im2col_indices, im2col_indices  # noqa: F401

eps = 1e-8  # hipsternet.constant.eps


def fc_forward(X, W, b):
    return X @ W + b, (W, X)


def fc_backward(dout, cache):
    W, h = cache
    dW = h.T @ dout
    db = np.sum(dout, axis=0)
    return dout @ W.T, dW, db


def relu_forward(X):
    return np.maximum(X, 0), X


def relu_backward(dout, cache):
    dX = dout.copy()
    dX[cache <= 0] = 0
    return dX


def lrelu_forward(X, a=1e-3):
    return np.maximum(a * X, X), (X, a)


def lrelu_backward(dout, cache):
    X, a = cache
    dX = dout.copy()
    dX[X < 0] *= a
    return dX


def sigmoid_forward(X):
    out = 1.0 / (1 + np.exp(-X))
    return out, out


def sigmoid_backward(dout, cache):
    return cache * (1.0 - cache) * dout


def tanh_forward(X):
    out = np.tanh(X)
    return out, out


def tanh_backward(dout, cache):
    return (1 - cache**2) * dout


def dropout_forward(X, p_dropout):
    u = np.random.binomial(1, p_dropout, size=X.shape) / p_dropout
    return X * u, u


def dropout_backward(dout, cache):
    return dout * cache


def bn_forward(X, gamma, beta, cache, momentum=0.9, train=True):
    running_mean, running_var = cache
    if train:
        mu, var = np.mean(X, axis=0), np.var(X, axis=0)
        X_norm = (X - mu) / np.sqrt(var + eps)
        out = gamma * X_norm + beta
        cache = (X, X_norm, mu, var, gamma, beta)
        running_mean = momentum * running_mean + (1.0 - momentum) * mu
        running_var = momentum * running_var + (1.0 - momentum) * var
    else:
        out = gamma * (X - running_mean) / np.sqrt(running_var + eps) + beta
        cache = None
    return out, cache, running_mean, running_var


def bn_backward(dout, cache):
    X, X_norm, mu, var, gamma, beta = cache
    N = X.shape[0]
    centred = X - mu
    inv_std = 1.0 / np.sqrt(var + eps)
    dnorm = dout * gamma
    dvar = -0.5 * np.sum(dnorm * centred, axis=0) * inv_std**3
    dmu = -np.sum(dnorm * inv_std, axis=0) + dvar * np.mean(-2.0 * centred, axis=0)
    dX = dnorm * inv_std + dvar * 2 * centred / N + dmu / N
    return dX, np.sum(dout * X_norm, axis=0), np.sum(dout, axis=0)


def conv_forward(X, W, b, stride=1, padding=1):
    n_filters, d_filter, h_filter, w_filter = W.shape
    n_x, d_x, h_x, w_x = X.shape
    h_out = (h_x - h_filter + 2 * padding) / stride + 1
    w_out = (w_x - w_filter + 2 * padding) / stride + 1
    if not h_out.is_integer() or not w_out.is_integer():
        raise Exception("Invalid output dimension!")
    X_col = im2col_indices(X, h_filter, w_filter, padding=padding, stride=stride)
    out = W.reshape(n_filters, -1) @ X_col + b
    out = out.reshape(n_filters, int(h_out), int(w_out), n_x).transpose(3, 0, 1, 2)
    return out, (X, W, b, stride, padding, X_col)


def conv_backward(dout, cache):
    X, W, b, stride, padding, X_col = cache
    n_filter, _, h_filter, w_filter = W.shape
    db = np.sum(dout, axis=(0, 2, 3)).reshape(n_filter, -1)
    dout_cols = dout.transpose(1, 2, 3, 0).reshape(n_filter, -1)
    dW = (dout_cols @ X_col.T).reshape(W.shape)
    dX_col = W.reshape(n_filter, -1).T @ dout_cols
    dX = col2im_indices(dX_col, X.shape, h_filter, w_filter, padding=padding, stride=stride)
    return dX, dW, db


def _maxpool(X_col):
    max_idx = np.argmax(X_col, axis=0)
    return X_col[max_idx, range(max_idx.size)], max_idx


def _dmaxpool(dX_col, dout_col, pool_cache):
    dX_col[pool_cache, range(dout_col.size)] = dout_col
    return dX_col


def _avgpool(X_col):
    return np.mean(X_col, axis=0), None


def _davgpool(dX_col, dout_col, pool_cache):
    dX_col[:, range(dout_col.size)] = 1.0 / dX_col.shape[0] * dout_col
    return dX_col


def maxpool_forward(X, size=2, stride=2):
    return _pool_forward(X, _maxpool, size, stride)


def maxpool_backward(dout, cache):
    return _pool_backward(dout, _dmaxpool, cache)


def avgpool_forward(X, size=2, stride=2):
    return _pool_forward(X, _avgpool, size, stride)


def avgpool_backward(dout, cache):
    return _pool_backward(dout, _davgpool, cache)


def _pool_forward(X, pool_fun, size=2, stride=2):
    n, d, h, w = X.shape
    h_out = (h - size) / stride + 1
    w_out = (w - size) / stride + 1
    if not w_out.is_integer() or not h_out.is_integer():
        raise Exception("Invalid output dimension!")
    X_col = im2col_indices(X.reshape(n * d, 1, h, w), size, size, padding=0, stride=stride)
    out, pool_cache = pool_fun(X_col)
    out = out.reshape(int(h_out), int(w_out), n, d).transpose(2, 3, 0, 1)
    return out, (X, size, stride, X_col, pool_cache)


def _pool_backward(dout, dpool_fun, cache):
    X, size, stride, X_col, pool_cache = cache
    n, d, w, h = X.shape  # sic: H and W swapped
    dX_col = dpool_fun(np.zeros_like(X_col), dout.transpose(2, 3, 0, 1).ravel(), pool_cache)
    dX = col2im_indices(dX_col, (n * d, 1, h, w), size, size, padding=0, stride=stride)
    return dX.reshape(X.shape)
