"""Type rules and schemas of every op, one module per op family; importing registers them."""

from . import (  # noqa: F401
    control,
    custom,
    elementwise,
    fused,
    index,
    layout,
    misc,
    ml,
    movement,
    nn,
    reduce,
    rnn,
)
