"""hipsternet's ``solver.adam``, returning the per-iteration losses it prints."""

import numpy as np

eps = 1e-8


def adam(nn, X_train, y_train, alpha=0.001, mb_size=256, n_iter=2000):
    order = np.arange(len(X_train))
    np.random.shuffle(order)
    X_train, y_train = X_train[order], y_train[order]
    minibatches = [(X_train[i:i + mb_size], y_train[i:i + mb_size])
                   for i in range(0, X_train.shape[0], mb_size)]
    M = {k: np.zeros_like(v) for k, v in nn.model.items()}
    R = {k: np.zeros_like(v) for k, v in nn.model.items()}
    beta1, beta2 = 0.9, 0.999
    losses = []
    for t in range(1, n_iter + 1):
        X_mini, y_mini = minibatches[np.random.randint(0, len(minibatches))]
        grad, loss = nn.train_step(X_mini, y_mini)
        losses.append(loss)
        for k in grad:
            M[k] = beta1 * M[k] + (1.0 - beta1) * grad[k]
            R[k] = beta2 * R[k] + (1.0 - beta2) * grad[k] ** 2
            m_k_hat = M[k] / (1.0 - beta1**t)
            r_k_hat = R[k] / (1.0 - beta2**t)
            nn.model[k] -= alpha * m_k_hat / (np.sqrt(r_k_hat) + eps)
    return nn, losses
