"""ML-From-Scratch's ``examples/convolutional_neural_network.py`` and a pooling variant.

The layer import below is where the README tells users to add fastcnn's.
"""

from .layers import Activation, BatchNormalization, Dense, Dropout, Flatten
from .layers import AveragePooling2D, Conv2D, MaxPooling2D
from .loss_functions import CrossEntropy
from .neural_network import NeuralNetwork
from .optimizers import Adam


def convolutional_neural_network(validation_data=None):
    """The example's network for 1x8x8 digits: two 'same' convs, no pooling."""
    clf = NeuralNetwork(optimizer=Adam(), loss=CrossEntropy, validation_data=validation_data)
    clf.add(Conv2D(n_filters=16, filter_shape=(3, 3), stride=1, input_shape=(1, 8, 8),
                   padding="same"))
    clf.add(Activation("relu"))
    clf.add(Dropout(0.25))
    clf.add(BatchNormalization())
    clf.add(Conv2D(n_filters=32, filter_shape=(3, 3), stride=1, padding="same"))
    clf.add(Activation("relu"))
    clf.add(Dropout(0.25))
    clf.add(BatchNormalization())
    clf.add(Flatten())
    clf.add(Dense(256))
    clf.add(Activation("relu"))
    clf.add(Dropout(0.4))
    clf.add(BatchNormalization())
    clf.add(Dense(10))
    clf.add(Activation("softmax"))
    return clf


def conv_pool_network(input_shape=(1, 8, 8)):
    """conv 3x3 - relu - max pool 2/2 - conv 2x2 'same' - avg pool 2/2 - dense - softmax."""
    clf = NeuralNetwork(optimizer=Adam(), loss=CrossEntropy)
    clf.add(Conv2D(n_filters=8, filter_shape=(3, 3), input_shape=input_shape, padding="same"))
    clf.add(Activation("relu"))
    clf.add(MaxPooling2D(pool_shape=(2, 2), stride=2))
    clf.add(Conv2D(n_filters=6, filter_shape=(2, 2), padding="same"))
    clf.add(AveragePooling2D(pool_shape=(2, 2), stride=2))
    clf.add(Flatten())
    clf.add(Dense(10))
    clf.add(Activation("softmax"))
    return clf
