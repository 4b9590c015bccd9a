from dataclasses import dataclass, field


@dataclass(frozen=True)
class Gate:
    """One mediation gate as SQL.

    `steps` are SELECT lists with joins: each becomes `SELECT s.*, <select> FROM <previous> s <joins>`,
    so a gate only adds columns (names starting with `_` are scratch and never stored). `ok` says,
    over the gate's output, whether the record passed; `reason` and `message` say why it did not.
    `produces` are the record columns the gate sets: a chain that starts at this gate recomputes them.
    """

    name: str
    produces: tuple[str, ...]
    steps: tuple[tuple[str, str], ...]  # (select list, joins)
    ok: str
    reason: str
    message: str
    params: dict = field(default_factory=dict)
    # Compute the gate's output once: later references to it would otherwise repeat costly expressions.
    materialize: bool = False
