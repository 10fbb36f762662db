"""A minimal protobuf schema for XLA's ``HloModuleProto``, built at import time.

jaxlib does not ship ``hlo_pb2``/``xla_data_pb2``, so the message classes the importer needs are
built programmatically (``descriptor_pb2`` + ``message_factory``) with a subset of the fields of
openxla/xla ``xla/service/hlo.proto`` and ``xla/xla_data.proto``. Field numbers below were
checked against those files. Fields not declared here are skipped by the protobuf parser (kept
as unknown fields), so the subset decodes any module XLA serializes.

Use :func:`parse_module_proto` on ``HloModule.as_serialized_hlo_module_proto()``.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto

# PrimitiveType enum of xla_data.proto: number -> (name as XLA prints it, bits per element).
# Bits are the storage width used for sizes; sub-byte types (s1/s2/s4, u1/u2/u4, f4e2m1fn) are
# packed; pred takes one byte; tuple/token/opaque/buffer have no storage of their own.
PRIMITIVE_TYPES: dict[int, tuple[str, int]] = {
    0: ("invalid", 0),
    1: ("pred", 8),
    30: ("s1", 1), 26: ("s2", 2), 21: ("s4", 4), 2: ("s8", 8), 3: ("s16", 16), 4: ("s32", 32),
    5: ("s64", 64),
    31: ("u1", 1), 27: ("u2", 2), 22: ("u4", 4), 6: ("u8", 8), 7: ("u16", 16), 8: ("u32", 32),
    9: ("u64", 64),
    10: ("f16", 16), 11: ("f32", 32), 16: ("bf16", 16), 12: ("f64", 64),
    19: ("f8e5m2", 8), 28: ("f8e4m3", 8), 20: ("f8e4m3fn", 8), 23: ("f8e4m3b11fnuz", 8),
    29: ("f8e3m4", 8), 24: ("f8e5m2fnuz", 8), 25: ("f8e4m3fnuz", 8),
    32: ("f4e2m1fn", 4), 33: ("f8e8m0fnu", 8),
    15: ("c64", 64), 18: ("c128", 128),
    13: ("tuple", 0), 14: ("opaque", 0), 17: ("token", 0), 34: ("buffer", 0),
}
TUPLE_TYPE = 13

# (message name, [(field name, number, type, label, type_name or None)])
_OPT, _REP = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED
_I64, _I32, _STR, _BYTES, _BOOL, _MSG = (_F.TYPE_INT64, _F.TYPE_INT32, _F.TYPE_STRING,
                                         _F.TYPE_BYTES, _F.TYPE_BOOL, _F.TYPE_MESSAGE)
_MESSAGES: list[tuple[str, list[tuple]]] = [
    ("LayoutProto", [
        ("minor_to_major", 1, _I64, _REP, None),
        ("element_size_in_bits", 7, _I64, _OPT, None),
        ("memory_space", 8, _I64, _OPT, None),
    ]),
    ("ShapeProto", [
        # element_type is the PrimitiveType enum; decoded as int32 (same wire format).
        ("element_type", 2, _I32, _OPT, None),
        ("dimensions", 3, _I64, _REP, None),
        ("tuple_shapes", 4, _MSG, _REP, ".xla.ShapeProto"),
        ("layout", 5, _MSG, _OPT, ".xla.LayoutProto"),
        ("is_dynamic_dimension", 6, _BOOL, _REP, None),
    ]),
    ("OpMetadata", [
        ("op_type", 1, _STR, _OPT, None),
        ("op_name", 2, _STR, _OPT, None),
        ("source_file", 3, _STR, _OPT, None),
        ("source_line", 4, _I32, _OPT, None),
    ]),
    # map<string, string> map = 1 (xla_data.proto); see _MAP_FIELDS.
    ("FrontendAttributes", []),
    ("WindowDimension", [
        ("size", 1, _I64, _OPT, None),
        ("stride", 2, _I64, _OPT, None),
        ("padding_low", 3, _I64, _OPT, None),
        ("padding_high", 4, _I64, _OPT, None),
        ("window_dilation", 5, _I64, _OPT, None),
        ("base_dilation", 6, _I64, _OPT, None),
    ]),
    ("Window", [("dimensions", 1, _MSG, _REP, ".xla.WindowDimension")]),
    ("SliceDimensions", [
        ("start", 1, _I64, _OPT, None),
        ("limit", 2, _I64, _OPT, None),
        ("stride", 3, _I64, _OPT, None),
    ]),
    ("PaddingConfigDimension", [
        ("edge_padding_low", 1, _I64, _OPT, None),
        ("edge_padding_high", 2, _I64, _OPT, None),
        ("interior_padding", 3, _I64, _OPT, None),
    ]),
    ("PaddingConfig", [("dimensions", 1, _MSG, _REP, ".xla.PaddingConfigDimension")]),
    ("ConvolutionDimensionNumbers", [
        ("kernel_input_feature_dimension", 3, _I64, _OPT, None),
        ("kernel_output_feature_dimension", 4, _I64, _OPT, None),
        ("kernel_spatial_dimensions", 6, _I64, _REP, None),
        ("input_batch_dimension", 7, _I64, _OPT, None),
        ("input_feature_dimension", 8, _I64, _OPT, None),
        ("output_batch_dimension", 9, _I64, _OPT, None),
        ("output_feature_dimension", 10, _I64, _OPT, None),
        ("input_spatial_dimensions", 11, _I64, _REP, None),
        ("output_spatial_dimensions", 12, _I64, _REP, None),
    ]),
    ("DotDimensionNumbers", [
        ("lhs_contracting_dimensions", 1, _I64, _REP, None),
        ("rhs_contracting_dimensions", 2, _I64, _REP, None),
        ("lhs_batch_dimensions", 3, _I64, _REP, None),
        ("rhs_batch_dimensions", 4, _I64, _REP, None),
    ]),
    ("HloInstructionProto", [
        ("name", 1, _STR, _OPT, None),
        ("opcode", 2, _STR, _OPT, None),
        ("shape", 3, _MSG, _OPT, ".xla.ShapeProto"),
        ("metadata", 7, _MSG, _OPT, ".xla.OpMetadata"),
        ("parameter_number", 9, _I64, _OPT, None),
        ("fusion_kind", 11, _STR, _OPT, None),
        ("tuple_index", 13, _I64, _OPT, None),
        ("dimensions", 14, _I64, _REP, None),
        ("window", 15, _MSG, _OPT, ".xla.Window"),
        ("convolution_dimension_numbers", 16, _MSG, _OPT, ".xla.ConvolutionDimensionNumbers"),
        ("slice_dimensions", 17, _MSG, _REP, ".xla.SliceDimensions"),
        ("dynamic_slice_sizes", 20, _I64, _REP, None),
        ("padding_config", 21, _MSG, _OPT, ".xla.PaddingConfig"),
        ("custom_call_target", 28, _STR, _OPT, None),
        ("dot_dimension_numbers", 30, _MSG, _OPT, ".xla.DotDimensionNumbers"),
        ("id", 35, _I64, _OPT, None),
        ("operand_ids", 36, _I64, _REP, None),
        ("control_predecessor_ids", 37, _I64, _REP, None),
        ("called_computation_ids", 38, _I64, _REP, None),
        ("backend_config", 43, _BYTES, _OPT, None),
        ("feature_group_count", 50, _I64, _OPT, None),
        ("frontend_attributes", 68, _MSG, _OPT, ".xla.FrontendAttributes"),
        ("batch_group_count", 58, _I64, _OPT, None),
    ]),
    ("HloComputationProto", [
        ("name", 1, _STR, _OPT, None),
        ("instructions", 2, _MSG, _REP, ".xla.HloInstructionProto"),
        ("id", 5, _I64, _OPT, None),
        ("root_id", 6, _I64, _OPT, None),
        ("is_fusion_computation", 7, _BOOL, _OPT, None),
    ]),
    ("InstructionSequence", [("instruction_ids", 1, _I64, _REP, None)]),
    ("HloScheduleProto", []),  # map<int64, InstructionSequence> sequences = 1; see _MAP_FIELDS
    ("AliasEntryProto", [
        ("output_shape_index", 1, _I64, _REP, None),
        ("parameter_number", 2, _I64, _OPT, None),
        ("parameter_shape_index", 3, _I64, _REP, None),
        ("kind", 4, _I32, _OPT, None),  # Kind enum: 0 undefined, 1 may-alias, 2 must-alias
    ]),
    ("HloInputOutputAliasProto", [("entries", 1, _MSG, _REP, ".xla.AliasEntryProto")]),
    ("HloModuleProto", [
        ("name", 1, _STR, _OPT, None),
        ("entry_computation_name", 2, _STR, _OPT, None),
        ("computations", 3, _MSG, _REP, ".xla.HloComputationProto"),
        ("id", 5, _I64, _OPT, None),
        ("entry_computation_id", 6, _I64, _OPT, None),
        ("schedule", 7, _MSG, _OPT, ".xla.HloScheduleProto"),
        ("input_output_alias", 8, _MSG, _OPT, ".xla.HloInputOutputAliasProto"),
        ("frontend_attributes", 19, _MSG, _OPT, ".xla.FrontendAttributes"),
    ]),
]

# Map fields, declared as protobuf does it (a repeated nested ``<Name>Entry`` message with
# ``map_entry`` set): message -> (field name, number, key type, value type, value type_name).
_MAP_FIELDS: dict[str, tuple] = {
    "HloScheduleProto": ("sequences", 1, _I64, _MSG, ".xla.InstructionSequence"),
    "FrontendAttributes": ("map", 1, _STR, _STR, None),
}


def build_message_classes(messages=None, *, file_name: str = "memmap_xla_hlo_subset.proto",
                          extra_fields: dict | None = None) -> dict[str, type]:
    """Message classes for a subset of XLA's protos.

    ``messages`` defaults to :data:`_MESSAGES` (what the importer reads); ``extra_fields`` maps a
    message name to more ``(name, number, type, label, type_name)`` fields (e.g. the attention
    detector adds constants' literals). Unknown fields of a serialized message are skipped."""
    messages = list(_MESSAGES if messages is None else messages)
    fdp = descriptor_pb2.FileDescriptorProto(name=file_name, package="xla", syntax="proto3")
    for msg_name, fields in messages:
        m = fdp.message_type.add(name=msg_name)
        for fname, number, ftype, label, type_name in list(fields) + list((extra_fields or {}).get(msg_name, ())):
            f = m.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                f.type_name = type_name
        if msg_name in _MAP_FIELDS:
            fname, number, key_type, value_type, value_type_name = _MAP_FIELDS[msg_name]
            entry_name = "".join(part.capitalize() for part in fname.split("_")) + "Entry"
            entry = m.nested_type.add(name=entry_name)
            entry.options.map_entry = True
            entry.field.add(name="key", number=1, type=key_type, label=_OPT)
            value = entry.field.add(name="value", number=2, type=value_type, label=_OPT)
            if value_type_name:
                value.type_name = value_type_name
            m.field.add(name=fname, number=number, type=_MSG, label=_REP,
                        type_name=f".xla.{msg_name}.{entry_name}")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"xla.{name}"))
            for name, _ in messages}


_CLASSES = build_message_classes()
HloModuleProto = _CLASSES["HloModuleProto"]


def parse_module_proto(serialized: bytes):
    """Decode a serialized ``xla.HloModuleProto`` into the subset message class."""
    msg = HloModuleProto()
    msg.ParseFromString(serialized)
    return msg
