"""JSON serialization of workflow inputs, step outputs and workflow results.

Values are stored in PostgreSQL as compact JSON text. Nothing is ever pickled, and decoding never
imports a module or instantiates a class named by the stored data unless the application registered
that class with :func:`register_type` (dataclasses, models and Enums met while *encoding* are
registered automatically, so the process that wrote a value can always read it back; other
processes must register the class, e.g. by importing the module that decorates it with
``@kit.register_type``, or through :func:`register_types_from_hints`).

Format
    JSON natives (``None``, ``bool``, ``int``, finite ``float``, ``str``, ``list``, ``dict`` with
    ``str`` keys) are stored as themselves. Everything else is a tagged object
    ``{"__kit__": TAG, "v": PAYLOAD}`` (plus ``"type"`` for registered classes):

    ============  ==========================================================================
    datetime      ISO 8601 text; the UTC offset is kept (named zones become fixed offsets),
                  naive stays naive; ``"fold": 1`` is added when set
    date, time    ISO 8601 text (an aware ``time`` keeps its offset)
    timedelta     ``[days, seconds, microseconds]`` (exact)
    uuid          canonical text
    decimal       ``str(value)`` (exact, keeps precision and exponent)
    bytes         base64 text; ``bytearray`` comes back as ``bytes``
    set           list of elements, sorted (naturally for all-number / all-str sets, otherwise by
    frozenset     their JSON text) so the output does not depend on hash order
    tuple         only inside set elements and dict keys, where hashability must survive
    dict          ``[[key, value], ...]``: used when a key is not a ``str`` or when the dict
                  contains the reserved key ``"__kit__"``
    enum          ``"type"`` = class key, ``"v"`` = member name (composite flags use ``"value"``)
    dataclass     ``"type"`` = class key, ``"v"`` = ``{field: value}``
    model         ``"type"`` = class key, ``"v"`` = ``model_dump(mode="json")`` (pydantic-style)
    ============  ==========================================================================

    The class key is ``f"{cls.__module__}.{cls.__qualname__}"``.

Decisions worth knowing
    * Tuples (including namedtuples) come back as lists, except inside set elements and dict keys.
    * Dict keys may be any value kit can encode whose decoded form is hashable (``int``, ``bool``,
      ``float``, ``UUID``, ``date``, ``Enum``, tuples, frozen dataclasses, ...). Such dicts use the
      tagged ``dict`` form so keys keep their type. Keys kit cannot encode raise SerializationError.
    * Subclasses of ``str``/``int``/``float``/``list``/``dict``/``tuple`` and of the date/time types
      (other than Enums, which keep their class) come back as the base type.
    * NaN and infinities are rejected (JSON cannot hold them), both when writing and reading.
    * Decoding a dataclass calls its ``__init__`` with the stored init fields (so new fields with
      defaults work for old data), sets stored ``init=False`` fields afterwards, and ignores stored
      fields the class no longer has. Models are rebuilt with ``cls.model_validate``.
    * :func:`encode` may return (parts of) its input unchanged when nothing needs tagging, so treat
      its result as read-only.
"""

from kit.serialization.decoding import _DECODERS as _DECODERS  # the decoders by tag
from kit.serialization.decoding import decode, decode_args, decode_trace, loads
from kit.serialization.encoding import dumps, encode, encode_args
from kit.serialization.exceptions import exception_from_record, exception_to_record
from kit.serialization.registry import TAG, register_type, register_types_from_hints

__all__ = [
    "TAG",
    "decode",
    "decode_args",
    "decode_trace",
    "dumps",
    "encode",
    "encode_args",
    "exception_from_record",
    "exception_to_record",
    "loads",
    "register_type",
    "register_types_from_hints",
]
