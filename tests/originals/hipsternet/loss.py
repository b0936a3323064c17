"""hipsternet's softmax cross-entropy with L2 regularisation of the 'W*' parameters."""

import numpy as np


def softmax(x):
    e = np.exp(x - np.max(x, axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def cross_entropy(model, y_pred, y_train, lam=1e-3):
    m = y_pred.shape[0]
    data_loss = -np.log(softmax(y_pred)[range(m), y_train]).sum() / m
    reg_loss = sum(0.5 * lam * np.sum(W * W) for k, W in model.items() if k.startswith("W"))
    return data_loss + reg_loss


def dcross_entropy(y_pred, y_train):
    m = y_pred.shape[0]
    grad_y = softmax(y_pred)
    grad_y[range(m), y_train] -= 1.0
    return grad_y / m
