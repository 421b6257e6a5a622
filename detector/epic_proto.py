"""The EPIC-KITCHENS-100 hand-object detection messages, built at import without protoc.

Schema (field numbers as released)::

    message BBox { float top_left_x = 1; float top = 2; float right = 3; float bottom = 4; }
    message FloatVector { float x = 1; float y = 2; }
    enum HandState { NO_CONTACT = 0; SELF_CONTACT = 1; ANOTHER_PERSON = 2; PORTABLE_OBJECT = 3;
                     STATIONARY_OBJECT = 4; }
    enum HandSide { LEFT = 0; RIGHT = 1; }
    message HandDetection { BBox bbox = 1; float score = 2; HandState state = 3;
                            FloatVector object_offset = 4; HandSide side = 5; }
    message ObjectDetection { BBox bbox = 1; float score = 2; }
    message Detections { string video_id = 1; int32 frame_number = 2; repeated HandDetection hands = 3;
                         repeated ObjectDetection objects = 4; }

BBox coordinates are normalized to the frame's width and height; frame numbers are 1-based.
The descriptors live in a private pool so they never clash with another copy of the schema.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_PACKAGE = "maskahand.epic_hoa"
_F = descriptor_pb2.FieldDescriptorProto

HAND_STATE_NAMES = ["NO_CONTACT", "SELF_CONTACT", "ANOTHER_PERSON", "PORTABLE_OBJECT", "STATIONARY_OBJECT"]
HAND_SIDE_NAMES = ["LEFT", "RIGHT"]


def _field(
    msg: descriptor_pb2.DescriptorProto,
    name: str,
    number: int,
    ftype: int,
    type_name: str = "",
    repeated: bool = False,
) -> None:
    f = msg.field.add(name=name, number=number, type=ftype)
    f.label = _F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL
    if type_name:
        f.type_name = f".{_PACKAGE}.{type_name}"


def _file_proto() -> descriptor_pb2.FileDescriptorProto:
    fp = descriptor_pb2.FileDescriptorProto(
        name="maskahand/epic_hoa.proto", package=_PACKAGE, syntax="proto3"
    )
    for enum_name, values in (("HandState", HAND_STATE_NAMES), ("HandSide", HAND_SIDE_NAMES)):
        enum = fp.enum_type.add(name=enum_name)
        for number, value in enumerate(values):
            enum.value.add(name=value, number=number)

    bbox = fp.message_type.add(name="BBox")
    for number, name in enumerate(("top_left_x", "top", "right", "bottom"), start=1):
        _field(bbox, name, number, _F.TYPE_FLOAT)
    vec = fp.message_type.add(name="FloatVector")
    _field(vec, "x", 1, _F.TYPE_FLOAT)
    _field(vec, "y", 2, _F.TYPE_FLOAT)
    hand = fp.message_type.add(name="HandDetection")
    _field(hand, "bbox", 1, _F.TYPE_MESSAGE, "BBox")
    _field(hand, "score", 2, _F.TYPE_FLOAT)
    _field(hand, "state", 3, _F.TYPE_ENUM, "HandState")
    _field(hand, "object_offset", 4, _F.TYPE_MESSAGE, "FloatVector")
    _field(hand, "side", 5, _F.TYPE_ENUM, "HandSide")
    obj = fp.message_type.add(name="ObjectDetection")
    _field(obj, "bbox", 1, _F.TYPE_MESSAGE, "BBox")
    _field(obj, "score", 2, _F.TYPE_FLOAT)
    dets = fp.message_type.add(name="Detections")
    _field(dets, "video_id", 1, _F.TYPE_STRING)
    _field(dets, "frame_number", 2, _F.TYPE_INT32)
    _field(dets, "hands", 3, _F.TYPE_MESSAGE, "HandDetection", repeated=True)
    _field(dets, "objects", 4, _F.TYPE_MESSAGE, "ObjectDetection", repeated=True)
    return fp


_POOL = descriptor_pool.DescriptorPool()
_POOL.AddSerializedFile(_file_proto().SerializeToString())


def _message(name: str) -> Any:  # a generated protobuf message class
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"{_PACKAGE}.{name}"))


BBox = _message("BBox")
FloatVector = _message("FloatVector")
HandDetection = _message("HandDetection")
ObjectDetection = _message("ObjectDetection")
Detections = _message("Detections")
