"""ML-From-Scratch's ``NeuralNetwork`` (without its progress bar and summary table)."""

import numpy as np


class NeuralNetwork:
    def __init__(self, optimizer, loss, validation_data=None):
        self.optimizer = optimizer
        self.layers = []
        self.errors = {"training": [], "validation": []}
        self.loss_function = loss()
        self.validation_data = validation_data

    def add(self, layer):
        if self.layers:
            layer.set_input_shape(shape=self.layers[-1].output_shape())
        if hasattr(layer, "initialize"):
            layer.initialize(optimizer=self.optimizer)
        self.layers.append(layer)

    def test_on_batch(self, X, y):
        y_pred = self._forward_pass(X, training=False)
        return np.mean(self.loss_function.loss(y, y_pred)), self.loss_function.acc(y, y_pred)

    def train_on_batch(self, X, y):
        y_pred = self._forward_pass(X)
        loss = np.mean(self.loss_function.loss(y, y_pred))
        acc = self.loss_function.acc(y, y_pred)
        self._backward_pass(self.loss_function.gradient(y, y_pred))
        return loss, acc

    def fit(self, X, y, n_epochs, batch_size):
        """Per-epoch mean training losses (and validation losses); batches in order."""
        n_batches = int(len(X) / batch_size)
        for _ in range(n_epochs):
            batch_error = 0
            for start in range(0, len(X), batch_size):
                batch = slice(start, start + batch_size)
                loss, _ = self.train_on_batch(X[batch], y[batch])
                batch_error += loss
            self.errors["training"].append(batch_error / n_batches)
            if self.validation_data is not None:
                X_val, y_val = self.validation_data
                y_val_pred = self._forward_pass(X_val, training=False)
                loss = np.mean(self.loss_function.loss(y_val, y_val_pred))
                self.errors["validation"].append(loss)
        return self.errors["training"], self.errors["validation"]

    def _forward_pass(self, X, training=True):
        for layer in self.layers:
            X = layer.forward_pass(X, training)
        return X

    def _backward_pass(self, loss_grad):
        for layer in reversed(self.layers):
            loss_grad = layer.backward_pass(loss_grad)

    def predict(self, X):
        return self._forward_pass(X, training=False)
