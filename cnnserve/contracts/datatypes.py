"""The one table of tensor datatypes and their names elsewhere: numpy, Triton's DataType enum, the ONNX element type
(what training writes into a graph), ONNX Runtime's type string (what the server reads back from a session), and the
InferTensorContents field that carries each in typed (non-raw) form.

Server, client and training all look datatypes up here, so a type one side writes is a type the other can serve.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np

from cnnserve.api import grpc_service_pb2 as pb


@dataclass(frozen=True)
class DataTypeInfo:
    name: str
    """Open Inference Protocol name: "FP32", "BYTES", ..."""
    numpy: np.dtype[Any]
    """Little-endian numpy dtype; object for BYTES (elements are bytes)."""
    triton: pb.DataType.ValueType
    """Triton's DataType enum value (ModelConfig): TYPE_FP32, TYPE_STRING for BYTES, ..."""
    onnx: int
    """ONNX TensorProto.DataType number (1 = FLOAT, 8 = STRING, ...): plain integers, so the server needs no onnx."""
    ort: str
    """ONNX Runtime's type string: "tensor(float)", "tensor(string)", ..."""
    contents_field: str | None
    """The InferTensorContents field that carries it in typed form; None when it travels only as raw bytes."""


def _info(name: str, dtype: str, triton: pb.DataType.ValueType, onnx: int, ort: str, field: str | None) -> DataTypeInfo:
    return DataTypeInfo(name, np.dtype(dtype), triton, onnx, f"tensor({ort})", field)


DATATYPES: Mapping[str, DataTypeInfo] = MappingProxyType(
    {
        info.name: info
        for info in (
            _info("BOOL", "?", pb.TYPE_BOOL, 9, "bool", "bool_contents"),
            _info("UINT8", "u1", pb.TYPE_UINT8, 2, "uint8", "uint_contents"),
            _info("UINT16", "<u2", pb.TYPE_UINT16, 4, "uint16", "uint_contents"),
            _info("UINT32", "<u4", pb.TYPE_UINT32, 12, "uint32", "uint_contents"),
            _info("UINT64", "<u8", pb.TYPE_UINT64, 13, "uint64", "uint64_contents"),
            _info("INT8", "i1", pb.TYPE_INT8, 3, "int8", "int_contents"),
            _info("INT16", "<i2", pb.TYPE_INT16, 5, "int16", "int_contents"),
            _info("INT32", "<i4", pb.TYPE_INT32, 6, "int32", "int_contents"),
            _info("INT64", "<i8", pb.TYPE_INT64, 7, "int64", "int64_contents"),
            _info("FP16", "<f2", pb.TYPE_FP16, 10, "float16", None),
            _info("FP32", "<f4", pb.TYPE_FP32, 1, "float", "fp32_contents"),
            _info("FP64", "<f8", pb.TYPE_FP64, 11, "double", "fp64_contents"),
            _info("BYTES", "O", pb.TYPE_STRING, 8, "string", "bytes_contents"),
        )
    }
)
"""Every datatype cnnserve serves, by protocol name. BF16 is absent: numpy has no such dtype."""

_BY_ORT: Mapping[str, str] = MappingProxyType({info.ort: info.name for info in DATATYPES.values()})
_BY_ONNX: Mapping[int, str] = MappingProxyType({info.onnx: info.name for info in DATATYPES.values()})


def datatype_info(datatype: str) -> DataTypeInfo:
    """The table entry for a protocol datatype name; ValueError naming the valid ones otherwise."""
    try:
        return DATATYPES[datatype]
    except KeyError:
        raise ValueError(f"unknown datatype {datatype!r}; expected one of {', '.join(DATATYPES)}") from None


def triton_data_type(datatype: str) -> pb.DataType.ValueType:
    """Triton's DataType enum value for a protocol datatype name ("FP32" -> TYPE_FP32)."""
    return datatype_info(datatype).triton


def datatype_from_onnx(elem_type: int) -> str:
    """The protocol datatype for an ONNX element type number (1 -> "FP32"); ValueError otherwise."""
    try:
        return _BY_ONNX[elem_type]
    except KeyError:
        raise ValueError(f"ONNX element type {elem_type} has no protocol datatype") from None


def datatype_from_ort(ort_type: str) -> str:
    """The protocol datatype for an ONNX Runtime type string ("tensor(float)" -> "FP32"); ValueError otherwise."""
    try:
        return _BY_ORT[ort_type]
    except KeyError:
        raise ValueError(
            f"ONNX Runtime type {ort_type!r} has no protocol datatype; supported: {', '.join(_BY_ORT)}"
        ) from None


_BY_NUMPY: Mapping[np.dtype[Any], str] = MappingProxyType(
    {info.numpy: info.name for info in DATATYPES.values() if info.name != "BYTES"}
)


def datatype_from_numpy(dtype: np.dtype[Any]) -> str:
    """The protocol datatype of a numpy dtype (float32 -> "FP32"; object -> "BYTES"); ValueError otherwise."""
    dtype = np.dtype(dtype)
    if dtype.kind == "O":
        return "BYTES"
    try:
        return _BY_NUMPY[dtype.newbyteorder("<") if dtype.byteorder == ">" else dtype]
    except KeyError:
        raise ValueError(f"numpy dtype {dtype} has no protocol datatype") from None
