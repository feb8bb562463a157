"""Regression heads shared by the architectures: PoseNet's (Kendall et al. 2015) and PoseLSTM's
(Walch et al. 2017)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from posenet_train.errors import ModelError

__all__ = [
    "INITIAL_LOG_VARIANCE",
    "GridLSTM",
    "PoseRegressor",
    "GlobalPoolHead",
    "InceptionAuxHead",
]

#: PoseLSTM reshapes the fc output into a grid with this many rows (32x64 for 2048 features).
LSTM_GRID_ROWS = 32


class GridLSTM(nn.Module):
    """PoseLSTM's spatial LSTMs: the feature vector reshaped to a ``32 x (F/32)`` grid is read by a
    bidirectional LSTM along the rows (left-right) and one along the columns (up-down); the four
    final hidden states are concatenated, giving ``4 * hidden_size`` features."""

    def __init__(self, in_features: int, hidden_size: int = 256) -> None:
        super().__init__()
        if in_features % LSTM_GRID_ROWS != 0 or in_features <= 0:
            raise ModelError(
                f"PoseLSTM needs a feature size divisible by {LSTM_GRID_ROWS}, got {in_features}"
            )
        if hidden_size <= 0:
            raise ModelError(f"lstm hidden size must be > 0, got {hidden_size}")
        self.rows = LSTM_GRID_ROWS
        self.cols = in_features // LSTM_GRID_ROWS
        self.hidden_size = hidden_size
        self.out_features = 4 * hidden_size
        self.lstm_lr = nn.LSTM(self.cols, hidden_size, batch_first=True, bidirectional=True)
        self.lstm_ud = nn.LSTM(self.rows, hidden_size, batch_first=True, bidirectional=True)

    def forward(self, features_BF: Tensor) -> Tensor:
        """[N, F] -> [N, 4 * hidden_size]."""
        grid = features_BF.reshape(features_BF.shape[0], self.rows, self.cols)
        _, (h_lr, _) = self.lstm_lr(grid)  # sequence over the 32 rows, each row a step
        _, (h_ud, _) = self.lstm_ud(grid.transpose(1, 2))  # sequence over the columns
        # h_*: [2 directions, N, hidden]
        return torch.cat((h_lr[0], h_lr[1], h_ud[0], h_ud[1]), dim=1)


#: Initial log-variances of the uncertainty layer (its weights start at zero, so every image
#: starts with these): position 0 (sigma = the training positions' spread, in the normalised
#: units the heads regress), rotation ln(0.1) (sigma about 0.32 rad, 18 degrees).
INITIAL_LOG_VARIANCE = (0.0, 0.0, 0.0, -2.3, -2.3, -2.3)


class PoseRegressor(nn.Module):
    """``[dropout] -> fc + ReLU -> [dropout] -> [GridLSTM] -> fc->xyz, fc->wpqr[, fc->logvar]``.

    Returns (normalised position [N,3], raw quaternion wxyz [N,4]); with ``uncertainty`` also
    the log-variances [N,6] (position in normalised units^2, rotation about the world's fixed
    x, y, z axes in rad^2). The model de-normalises the position and its log-variances and
    scales the quaternion to unit length.
    """

    def __init__(
        self,
        in_features: int,
        fc_features: int,
        *,
        dropout_before: float = 0.0,
        dropout_after: float = 0.0,
        lstm_hidden: int | None = None,
        uncertainty: bool = False,
    ) -> None:
        super().__init__()
        for name, p in (("dropout_before", dropout_before), ("dropout_after", dropout_after)):
            if not 0.0 <= p < 1.0:
                raise ModelError(f"{name} must be in [0, 1), got {p}")
        self.dropout_before = nn.Dropout(dropout_before) if dropout_before > 0 else nn.Identity()
        self.fc = nn.Linear(in_features, fc_features)
        self.dropout_after = nn.Dropout(dropout_after) if dropout_after > 0 else nn.Identity()
        self.lstm = GridLSTM(fc_features, lstm_hidden) if lstm_hidden else None
        out = self.lstm.out_features if self.lstm is not None else fc_features
        self.fc_xyz = nn.Linear(out, 3)
        self.fc_wpqr = nn.Linear(out, 4)
        self.fc_log_variance = None
        if uncertainty:
            # Starts homoscedastic (zero weights): the same, moderate variance for every image
            # until the likelihood loss teaches it which images are hard.
            self.fc_log_variance = nn.Linear(out, 6)
            with torch.no_grad():
                self.fc_log_variance.weight.zero_()
                self.fc_log_variance.bias.copy_(torch.tensor(INITIAL_LOG_VARIANCE))

    def forward(self, features_BF: Tensor) -> tuple[Tensor, ...]:
        """[N, in_features] -> ([N, 3], [N, 4]) or, with uncertainty, ([N,3], [N,4], [N,6])."""
        x = self.dropout_before(features_BF)
        x = F.relu(self.fc(x))
        x = self.dropout_after(x)
        if self.lstm is not None:
            x = self.lstm(x)
        if self.fc_log_variance is not None:
            return self.fc_xyz(x), self.fc_wpqr(x), self.fc_log_variance(x)
        return self.fc_xyz(x), self.fc_wpqr(x)


class GlobalPoolHead(nn.Module):
    """PoseNet's main head: global average pool (the paper's 7x7 pool at 224 input; adaptive so
    other input sizes work) -> dropout -> fc + ReLU -> [GridLSTM] -> xyz, wpqr.

    ``pool_hw`` other than (1, 1) average-pools to a coarse grid instead and flattens it, so the
    fc layer sees where in the image things are, not only what is there; where the scene sits in
    the frame is exactly what distinguishes nearby camera orientations.
    """

    def __init__(
        self,
        in_channels: int,
        fc_features: int = 2048,
        *,
        dropout: float = 0.5,
        lstm_hidden: int | None = None,
        pool_hw: tuple[int, int] = (1, 1),
        uncertainty: bool = False,
    ) -> None:
        super().__init__()
        pool_hw = (int(pool_hw[0]), int(pool_hw[1]))
        if min(pool_hw) < 1:
            raise ModelError(f"pool_hw must be two positive integers, got {pool_hw}")
        self.pool = nn.AdaptiveAvgPool2d(pool_hw)
        self.regressor = PoseRegressor(
            in_channels * pool_hw[0] * pool_hw[1],
            fc_features,
            dropout_before=dropout,
            lstm_hidden=lstm_hidden,
            uncertainty=uncertainty,
        )

    def forward(self, features_BCHW: Tensor) -> tuple[Tensor, ...]:
        """[N, C, H, W] -> ([N, 3], [N, 4][, [N, 6]])."""
        return self.regressor(torch.flatten(self.pool(features_BCHW), 1))


class InceptionAuxHead(nn.Module):
    """PoseNet's auxiliary head: 5x5/3 average pool -> 1x1 conv 128 + ReLU -> fc + ReLU ->
    dropout -> [GridLSTM] -> xyz, wpqr.

    At GoogLeNet's 224x224 input the 14x14 feature map pools to exactly 4x4 (the paper's head).
    For other input sizes the pooled map is resampled to 4x4 with adaptive average pooling so the
    fc layer keeps its shape (and weights stay interchangeable between input sizes). Auxiliary
    heads run only in training, so this never reaches the exported graph.
    """

    grid = (4, 4)

    def __init__(
        self,
        in_channels: int,
        fc_features: int = 1024,
        *,
        conv_channels: int = 128,
        dropout: float = 0.7,
        lstm_hidden: int | None = None,
        uncertainty: bool = False,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, conv_channels, kernel_size=1)
        self.regressor = PoseRegressor(
            conv_channels * self.grid[0] * self.grid[1],
            fc_features,
            dropout_after=dropout,
            lstm_hidden=lstm_hidden,
            uncertainty=uncertainty,
        )

    def forward(self, features_BCHW: Tensor) -> tuple[Tensor, ...]:
        """[N, C, H, W] -> ([N, 3], [N, 4][, [N, 6]])."""
        x = features_BCHW
        if x.shape[-2] >= 5 and x.shape[-1] >= 5:
            x = F.avg_pool2d(x, kernel_size=5, stride=3)
        if tuple(x.shape[-2:]) != self.grid:
            x = F.adaptive_avg_pool2d(x, self.grid)
        x = F.relu(self.conv(x))
        return self.regressor(torch.flatten(x, 1))
