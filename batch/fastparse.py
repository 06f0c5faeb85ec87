"""Fast, exact validation of wire events in bulk: a regex fast path with ``decode_event`` as the referee.

Almost every event on the topics is in the canonical form ``Event.to_json_bytes`` writes (compact
JSON, fields in model order, unset optionals left out). For those, one regex over a whole batch
pulls out the fields in C instead of running ``json.loads`` and pydantic per event. The fast path
is a strict *subset* of the contract: it only matches messages the contract certainly accepts with
exactly these field values --

* ``event_id`` a hyphenated hex UUID; ids made of printable ASCII without ``"`` or ``\\`` (so JSON
  unescaping cannot change them and the contract's "no control characters" holds), 1-128 long;
* ``ts`` a 12-13 digit integer, then checked numerically against the contract's range and the
  future-skew limit; ``quantity``/``price`` plain numbers, then checked against their bounds and
  only on purchases; a flat ``context`` of such strings, plain numbers, booleans and nulls, with
  at most 32 keys (counted as ``":`` sequences: keys and values hold no ``"``, so each pair has one).

Everything else -- another field order, escapes, non-ASCII ids, a ``context``, an out-of-range
value -- goes through :func:`streamrec.events.decode_event` itself, which accepts it or names the
reason. So the result is always what ``decode_event`` would give, only faster.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from streamrec.events import MAX_CONTEXT_KEYS, MAX_ID_LEN, MAX_TS_MS, MIN_TS_MS, InvalidEvent, decode_event

_TEXT = rb"[\x20\x21\x23-\x5b\x5d-\x7e]"  # printable ASCII without " and \\
_ID = _TEXT + rb"{1,128}+"
_HEX = rb"[0-9a-fA-F]"
# A flat context pair: key of at most 64 characters, a short string, a plain number, true, false or null.
_PAIR = (rb'"' + _TEXT + rb'{0,64}+":(?:"' + _TEXT + rb'{0,256}+"|-?(?:0|[1-9][0-9]{0,15}+)(?:\.[0-9]{1,17}+)?'
         rb"|true|false|null)")
# Possessive quantifiers (3.11+) skip backtracking bookkeeping: every repeat here is followed by a
# character it cannot match, so giving characters back could never lead to a match anyway.
_BODY = (
    rb'\{"event_id":"(' + _HEX + rb"{8}+-" + _HEX + rb"{4}+-" + _HEX + rb"{4}+-" + _HEX + rb"{4}+-" + _HEX
    + rb'{12}+)","user_id":"(' + _ID + rb')","item_id":"(' + _ID
    + rb')","type":"(click|purchase)","ts":([1-9][0-9]{11,12}+)'
    rb'(?:,"session_id":"' + _ID + rb'")?(?:,"quantity":([1-9][0-9]{0,4}+))?'
    rb'(?:,"price":((?:0|[1-9][0-9]{0,9}+)(?:\.[0-9]{1,17}+)?))?'
    rb'(?:,"context":\{((?:' + _PAIR + rb')(?:,' + _PAIR + rb')*+)?\})?\}'
)
_LINES = re.compile(rb"^" + _BODY + rb"$", re.M)  # one match per newline-separated message
_ONE = re.compile(_BODY)
# context.category follows the id rules (1-128 characters) or is null; keys hold no `"`, so this is the key.
_CATEGORY = re.compile(rb'"category":(?:"[^"]{1,%d}+"|null)(?:,|$)' % MAX_ID_LEN)
MAX_QUANTITY = 10_000
MAX_PRICE = 1e9


@dataclass
class Parsed:
    """Valid events as parallel columns (ids as bytes), plus the invalid ones by reason.

    Fast-path rows keep their numbers in numpy chunks; the few events the full decoder accepted are
    kept apart in plain lists; :meth:`columns` joins both in one order.
    """

    ids: list[bytes] = field(default_factory=list)  # event ids as hyphenated hex (36 bytes)
    users: list[bytes] = field(default_factory=list)
    items: list[bytes] = field(default_factory=list)
    ts: list[npt.NDArray[np.int64]] = field(default_factory=list)
    purchase: list[npt.NDArray[np.bool_]] = field(default_factory=list)
    slow_ids: list[bytes] = field(default_factory=list)
    slow_users: list[bytes] = field(default_factory=list)
    slow_items: list[bytes] = field(default_factory=list)
    slow_ts: list[int] = field(default_factory=list)
    slow_purchase: list[bool] = field(default_factory=list)
    invalid: Counter[str] = field(default_factory=Counter)
    slow: int = 0  # events that needed the full decoder

    def extend(self, other: Parsed) -> None:
        """Append ``other``'s events and counts."""
        self.ids.extend(other.ids)
        self.users.extend(other.users)
        self.items.extend(other.items)
        self.ts.extend(other.ts)
        self.purchase.extend(other.purchase)
        self.slow_ids.extend(other.slow_ids)
        self.slow_users.extend(other.slow_users)
        self.slow_items.extend(other.slow_items)
        self.slow_ts.extend(other.slow_ts)
        self.slow_purchase.extend(other.slow_purchase)
        self.invalid.update(other.invalid)
        self.slow += other.slow

    def columns(self) -> tuple[list[bytes], list[bytes], npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
        """(users, items, ts, purchase) of every valid event, fast-path rows first."""
        ts = np.concatenate([*self.ts, np.array(self.slow_ts, dtype=np.int64)])
        purchase = np.concatenate([*self.purchase, np.array(self.slow_purchase, dtype=np.bool_)])
        return self.users + self.slow_users, self.items + self.slow_items, ts, purchase

    def event_ids(self) -> npt.NDArray[np.uint64]:
        """Every valid event's id as two uint64 words (n × 2: the UUID's 16 bytes), in :meth:`columns` order."""
        # every id is exactly 36 bytes: the regex, or str(UUID) on the slow path
        return uuid_words(np.array(self.ids + self.slow_ids, dtype="S36"))


def parse_values(values: list[bytes | None], now_ms: int, max_future_ms: int) -> Parsed:
    """Validate a batch of raw message values exactly as :func:`decode_event` would, in bulk."""
    out = Parsed()
    clean = [v if v else b"" for v in values]
    rows: list[tuple[bytes, ...]] | None = None
    blob = b"\n".join(clean)
    # No message may contain a newline, or one message could pass as two lines. (A match is far
    # shorter than MAX_EVENT_BYTES -- three ids of at most 128 characters -- so size holds too.)
    if blob.count(b"\n") == len(clean) - 1:
        found = _LINES.findall(blob)
        if len(found) == len(clean):  # every line matched, so every message fully matched
            rows = found
    if rows is not None:
        _accept_rows(rows, list(range(len(clean))), clean, now_ms, max_future_ms, out)
        return out
    matched: list[tuple[bytes, ...]] = []
    where: list[int] = []
    for n, raw in enumerate(clean):
        m = _ONE.fullmatch(raw)
        if m is not None:
            matched.append(tuple(g or b"" for g in m.groups()))
            where.append(n)
        else:
            _slow(raw, now_ms, max_future_ms, out)
    _accept_rows(matched, where, clean, now_ms, max_future_ms, out)
    return out


def _accept_rows(
    rows: list[tuple[bytes, ...]], where: list[int], raw: list[bytes], now_ms: int, max_future_ms: int, out: Parsed
) -> None:
    """Range-check regex rows in bulk; rows failing a check go to the full decoder for the verdict."""
    if not rows:
        return
    event_ids, users, items, types, ts_text, qty, price, context = zip(*rows, strict=True)
    ts = np.fromiter(map(int, ts_text), np.int64, count=len(ts_text))
    purchase = np.fromiter(map(len, types), np.int64, count=len(types)) == len(b"purchase")
    bad = (ts < MIN_TS_MS) | (ts > MAX_TS_MS) | (ts > now_ms + max_future_ms)
    if any(qty) or any(price):
        q = np.array([int(x) if x else 1 for x in qty], dtype=np.int64)
        pr = np.array([float(x) if x else 0.0 for x in price], dtype=np.float64)
        has_extra = np.array([bool(a or b) for a, b in zip(qty, price, strict=True)])
        bad |= (q > MAX_QUANTITY) | (pr > MAX_PRICE) | (has_extra & ~purchase)
    if any(context):
        bad |= np.array([c.count(b'":') > MAX_CONTEXT_KEYS or (b'"category":' in c and not _CATEGORY.search(c))
                         for c in context])
    if not bad.any():
        out.ids.extend(event_ids)
        out.users.extend(users)
        out.items.extend(items)
        out.ts.append(ts)
        out.purchase.append(purchase)
        return
    good = np.flatnonzero(~bad)
    out.ids.extend(event_ids[g] for g in good.tolist())
    out.users.extend(users[g] for g in good.tolist())
    out.items.extend(items[g] for g in good.tolist())
    out.ts.append(ts[good])
    out.purchase.append(purchase[good])
    for b in np.flatnonzero(bad).tolist():
        _slow(raw[where[b]], now_ms, max_future_ms, out)


def _slow(raw: bytes, now_ms: int, max_future_ms: int, out: Parsed) -> None:
    """The contract's own decoder: accept the event or count its reason."""
    out.slow += 1
    try:
        event = decode_event(raw, now=now_ms, max_future_ms=max_future_ms)
    except InvalidEvent as exc:
        out.invalid[exc.reason] += 1
        return
    out.slow_ids.append(str(event.event_id).encode())  # canonical hyphenated lowercase
    out.slow_users.append(event.user_id.encode())
    out.slow_items.append(event.item_id.encode())
    out.slow_ts.append(event.ts)
    out.slow_purchase.append(event.type.value == "purchase")


_NIBBLE = np.zeros(256, np.uint8)
for _k, _c in enumerate(b"0123456789abcdef"):
    _NIBBLE[_c] = _k
    _NIBBLE[bytes([_c]).upper()[0]] = _k
_HEX_POS = np.array([k for k in range(36) if k not in (8, 13, 18, 23)])  # the 32 digits around the hyphens


def uuid_words(text: npt.NDArray[np.bytes_]) -> npt.NDArray[np.uint64]:
    """Hyphenated hex UUIDs (``S36``, either case, as validated above) to their 16 bytes as n × 2 uint64.

    Vectorised: the same 128 bits ``uuid.UUID(x).bytes`` gives (big-endian words), without a Python
    object per event. Only for ids the contract accepted in hyphenated form.
    """
    if len(text) == 0:
        return np.zeros((0, 2), np.uint64)
    digits = _NIBBLE[text.view(np.uint8).reshape(-1, 36)[:, _HEX_POS]]
    packed = (digits[:, 0::2] << 4) | digits[:, 1::2]  # n × 16 bytes
    return np.ascontiguousarray(packed).view(">u8").astype(np.uint64)
