"""`build_contract`: a model's or plan's tensor specs -> descriptor, classes, fingerprint."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message, message_factory

from meshserve.contracts import codec
from meshserve.contracts.naming import field_names, field_numbers, package_segment, service_name
from meshserve.contracts.specs import ContractKind, FieldSpec
from meshserve.errors import InvalidInputError
from meshserve.limits import DEFAULT_LIMITS, Limits
from meshserve.names import check_name, quote

__all__ = ["Contract", "TensorField", "build_contract"]

_F = descriptor_pb2.FieldDescriptorProto
_OPTIONAL = _F.LABEL_OPTIONAL
_REPEATED = _F.LABEL_REPEATED

# Fixed fields (1-15 are meshserve's): (name, number, type, comment); "map" is map<string, string>.
_FixedField = tuple[str, int, str, str]
_FIXED: dict[tuple[ContractKind, str], tuple[_FixedField, ...]] = {
    ("model", "request"): (
        ("request_id", 1, "string", "Correlation id, echoed in the response. Required on streams."),
        (
            "timeout_ms",
            2,
            "uint32",
            "Budget for one stream item; 0 means none (unary calls use the call deadline).",
        ),
    ),
    ("model", "response"): (
        ("request_id", 1, "string", "The request's id."),
        (
            "status",
            2,
            "Status",
            "Unset on success; only set on streams (a unary call fails with its gRPC status).",
        ),
    ),
    ("plan", "request"): (
        (
            "request_id",
            1,
            "string",
            "Request id; generated when empty. Feedback refers to it. Required on streams.",
        ),
        (
            "routing_key",
            2,
            "string",
            "Sticky key for split steps and bandit contexts (e.g. a user id).",
        ),
        (
            "attributes",
            3,
            "map",
            "Request attributes visible to select predicates, routers and bandits.",
        ),
        (
            "timeout_ms",
            4,
            "uint32",
            "Budget for one stream item; 0 means none (unary calls use the call deadline).",
        ),
    ),
    ("plan", "response"): (
        ("request_id", 1, "string", "The request's id (generated when the request had none)."),
        (
            "status",
            2,
            "Status",
            "Unset on success; only set on streams (a unary call fails with its gRPC status).",
        ),
        (
            "decisions",
            3,
            "map",
            "Branch chosen by each select/split/bandit step: step name -> branch name.",
        ),
        ("plan_version", 4, "uint32", "The plan version that ran."),
        ("trace_id", 5, "string", "Trace id of this execution (empty when tracing is off)."),
    ),
}
_SCALAR_FIXED = {"string": _F.TYPE_STRING, "uint32": _F.TYPE_UINT32, "int32": _F.TYPE_INT32}
_METHOD = {"model": "Predict", "plan": "Execute"}


@dataclass(frozen=True)
class TensorField:
    """Where one tensor lives in a typed message.

    `field` is the proto field name, `number` its field number; `nested` is True when the field
    is a ``<Dtype>Tensor {values, shape}`` message (the row shape is not fully known), False when
    it is a packed ``repeated <scalar>`` of the rows flattened in C order.
    """

    spec: FieldSpec
    field: str
    number: int
    nested: bool

    @property
    def name(self) -> str:
        return self.spec.name

    def expected(self) -> str:
        """What the field must hold, for error messages and comments."""
        spec = self.spec
        kind = spec.scalar.name
        if self.nested:
            shape = "any shape" if spec.shape is None else f"shape {list(spec.shape)}"
            return f"{kind} values with their shape ({shape})"
        if not spec.shape:
            return f"exactly one {kind} value"
        size = spec.row_size
        per_row = (
            f"rows of {list(spec.shape[1:])}, {size} values per row"
            if spec.shape[1:]
            else ("rows of one value each")
        )
        if spec.shape[0] >= 0:
            return f"{kind}, {spec.shape[0]} {per_row} ({spec.shape[0] * size} values)"
        return f"{kind}, any number of {per_row}"


@dataclass(frozen=True, eq=False)
class Contract:
    """The typed gRPC contract of one model or plan at one schema version.

    Built only by `build_contract`. Holds its own descriptor pool, so contracts of different
    versions (or the same names) never clash. Converters: `decode_request`/`encode_request`
    (typed request <-> arrays + fixed fields) and `encode_response`/`decode_response`.
    """

    kind: ContractKind
    name: str
    schema_version: int
    inputs: tuple[TensorField, ...]
    outputs: tuple[TensorField, ...]
    file: descriptor_pb2.FileDescriptorProto
    fingerprint: str
    pool: descriptor_pool.DescriptorPool
    request_class: type[message.Message]
    response_class: type[message.Message]
    tensor_classes: Mapping[str, type[message.Message]]

    @property
    def package(self) -> str:
        return self.file.package

    @property
    def service(self) -> str:
        """Fully qualified service name (``meshserve.models.mlp.v1.Mlp``)."""
        return f"{self.file.package}.{self.file.service[0].name}"

    @property
    def unary_method(self) -> str:
        return _METHOD[self.kind]

    @property
    def stream_method(self) -> str:
        return f"{_METHOD[self.kind]}Stream"

    def method_path(self, *, stream: bool = False) -> str:
        """``/meshserve.models.mlp.v1.Mlp/Predict`` (``.../PredictStream`` with `stream`)."""
        return f"/{self.service}/{self.stream_method if stream else self.unary_method}"

    @property
    def file_name(self) -> str:
        """``meshserve/models/mlp/v1/mlp.proto``: the path `proto_text` is exported under."""
        return self.file.name

    def input(self, name: str) -> TensorField:
        return _by_name(self.inputs, name, "input", self)

    def output(self, name: str) -> TensorField:
        return _by_name(self.outputs, name, "output", self)

    def decode_request(
        self, request: message.Message, limits: Limits = DEFAULT_LIMITS
    ) -> codec.TypedRequest:
        return codec.decode_request(self, request, limits)

    def rows_of(self, request: message.Message) -> int:
        return codec.rows_of(self, request)

    def encode_request(self, arrays: Mapping[str, Any], **fixed: Any) -> message.Message:
        return codec.encode_request(self, arrays, **fixed)

    def encode_response(self, arrays: Mapping[str, Any], **fixed: Any) -> message.Message:
        return codec.encode_response(self, arrays, **fixed)

    def decode_response(
        self, response: message.Message, limits: Limits = DEFAULT_LIMITS
    ) -> codec.TypedResponse:
        return codec.decode_response(self, response, limits)

    def proto_text(self) -> str:
        from meshserve.contracts.render import render_proto

        return render_proto(self)


def _by_name(fields: Sequence[TensorField], name: str, what: str, c: Contract) -> TensorField:
    for f in fields:
        if f.name == name:
            return f
    known = ", ".join(repr(f.name) for f in fields)
    raise InvalidInputError(f"{c.kind} {c.name!r} has no {what} {quote(name)} (known: {known})")


def _layout(specs: Sequence[FieldSpec], taken: Sequence[str], where: str) -> list[TensorField]:
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise InvalidInputError(f"{where}: tensor names appear twice: {dup}")
    fields = field_names(names, taken)
    numbers = field_numbers(names)
    return [
        TensorField(s, fields[s.name], numbers[s.name], nested=s.row_size == 0)
        for s in sorted(specs, key=lambda s: s.name)
    ]


def _json_name(name: str) -> str:
    """protoc's default json_name: underscores dropped, the letter after one upper-cased."""
    out: list[str] = []
    upper = False
    for ch in name:
        if ch == "_":
            upper = True
        else:
            out.append(ch.upper() if upper else ch)
            upper = False
    return "".join(out)


def _add(msg: descriptor_pb2.DescriptorProto, name: str, number: int, **kw: Any) -> Any:
    return msg.field.add(name=name, number=number, json_name=_json_name(name), **kw)


def _add_fixed(msg: descriptor_pb2.DescriptorProto, fixed: _FixedField, pkg: str) -> None:
    name, number, type_name, _ = fixed
    field = _add(msg, name, number)
    if type_name == "map":
        entry_name = "".join(w.capitalize() for w in name.split("_")) + "Entry"
        entry = msg.nested_type.add(name=entry_name)
        entry.options.map_entry = True
        _add(entry, "key", 1, type=_F.TYPE_STRING, label=_OPTIONAL)
        _add(entry, "value", 2, type=_F.TYPE_STRING, label=_OPTIONAL)
        field.label = _REPEATED
        field.type = _F.TYPE_MESSAGE
        field.type_name = f".{pkg}.{msg.name}.{entry_name}"
    elif type_name == "Status":
        field.label = _OPTIONAL
        field.type = _F.TYPE_MESSAGE
        field.type_name = f".{pkg}.Status"
    else:
        field.label = _OPTIONAL
        field.type = _SCALAR_FIXED[type_name]


def _add_tensor(msg: descriptor_pb2.DescriptorProto, tf: TensorField, pkg: str) -> None:
    field = _add(msg, tf.field, tf.number)
    if tf.nested:
        field.label = _OPTIONAL
        field.type = _F.TYPE_MESSAGE
        field.type_name = f".{pkg}.{tf.spec.scalar.title}Tensor"
    else:
        field.label = _REPEATED
        field.type = tf.spec.scalar.proto_type


def _tensor_message(file: descriptor_pb2.FileDescriptorProto, title: str, ptype: int) -> None:
    msg = file.message_type.add(name=f"{title}Tensor")
    _add(msg, "values", 1, type=ptype, label=_REPEATED)
    _add(msg, "shape", 2, type=_F.TYPE_INT64, label=_REPEATED)


def _status_message(file: descriptor_pb2.FileDescriptorProto) -> None:
    msg = file.message_type.add(name="Status")
    _add(msg, "code", 1, type=_F.TYPE_INT32, label=_OPTIONAL)
    _add(msg, "message", 2, type=_F.TYPE_STRING, label=_OPTIONAL)
    _add(msg, "retry_pushback_ms", 3, type=_F.TYPE_UINT32, label=_OPTIONAL)


def build_contract(
    kind: ContractKind,
    name: str,
    inputs: Sequence[FieldSpec],
    outputs: Sequence[FieldSpec],
    *,
    schema_version: int = 1,
) -> Contract:
    """The typed contract of model or plan `name` (a meshserve name) at `schema_version`.

    Deterministic: the same arguments give the same descriptor, field numbers and fingerprint,
    in any process and whatever the order of `inputs`/`outputs`. InvalidInputError when the name
    is not a meshserve name, the kind is unknown, a tensor name repeats or a dtype is unknown.
    """
    if kind not in _METHOD:
        raise InvalidInputError(f"contract kind {quote(str(kind))}: expected 'model' or 'plan'")
    check_name(kind, name)
    if schema_version < 1:
        raise InvalidInputError(f"{kind} {name!r}: schema version must be >= 1")
    for s in outputs:
        if s.optional:
            raise InvalidInputError(f"{kind} {name!r}: output {quote(s.name)} cannot be optional")
    segment = package_segment(name)
    group = "models" if kind == "model" else "plans"
    pkg = f"meshserve.{group}.{segment}.v{schema_version}"
    method = _METHOD[kind]
    in_fields = _layout(inputs, [f[0] for f in _FIXED[(kind, "request")]], f"{kind} {name!r}")
    out_fields = _layout(outputs, [f[0] for f in _FIXED[(kind, "response")]], f"{kind} {name!r}")

    file = descriptor_pb2.FileDescriptorProto(
        name=f"meshserve/{group}/{segment}/v{schema_version}/{segment}.proto",
        package=pkg,
        syntax="proto3",
    )
    for role, fields in (("request", in_fields), ("response", out_fields)):
        msg = file.message_type.add(name=f"{method}{role.capitalize()}")
        for fixed in _FIXED[(kind, role)]:
            _add_fixed(msg, fixed, pkg)
        for tf in fields:
            _add_tensor(msg, tf, pkg)
    _status_message(file)
    nested = {tf.spec.scalar.title: tf.spec.scalar for tf in (*in_fields, *out_fields) if tf.nested}
    for title in sorted(nested):
        _tensor_message(file, title, nested[title].proto_type)
    service = file.service.add(name=service_name(name))
    req, resp = f".{pkg}.{method}Request", f".{pkg}.{method}Response"
    service.method.add(name=method, input_type=req, output_type=resp)
    service.method.add(
        name=f"{method}Stream",
        input_type=req,
        output_type=resp,
        client_streaming=True,
        server_streaming=True,
    )
    fingerprint = hashlib.sha256(file.SerializeToString(deterministic=True)).hexdigest()

    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    classes = {
        m.name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{pkg}.{m.name}"))
        for m in file.message_type
    }
    return Contract(
        kind=kind,
        name=name,
        schema_version=schema_version,
        inputs=tuple(in_fields),
        outputs=tuple(out_fields),
        file=file,
        fingerprint=fingerprint,
        pool=pool,
        request_class=classes[f"{method}Request"],
        response_class=classes[f"{method}Response"],
        tensor_classes={t: classes[f"{t}Tensor"] for t in nested},
    )


def fixed_fields(kind: ContractKind, role: str) -> tuple[_FixedField, ...]:
    """The fixed (non-tensor) fields of `kind`'s request or response: (name, number, type,
    comment); `render` and the docs read them from here."""
    return _FIXED[(kind, role)]
