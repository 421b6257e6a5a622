"""100DOH annotations in Pascal VOC layout, as released (VOCdevkit2007_handobj_100K/VOC2007).

Layout: ``Annotations/<id>.xml``, ``JPEGImages/<id>.jpg``, ``ImageSets/Main/<split>.txt``. Objects
are ``hand`` (with ``bndbox``, ``contactstate`` 0..4, ``handside`` 0 left / 1 right) and
``targetobject``; the 3-class hircnn ignores target objects and maps ``contactstate > 0`` to label 2
(in contact), 0 to label 1 (not in contact). VOC boxes are 1-based inclusive pixel coordinates; they
are shifted by -1 on x1/y1 so a full-image box covers [0, W] x [0, H].
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..core.fsutil import atomic_write_bytes

LABEL_NO_CONTACT = 1
LABEL_CONTACT = 2


class VOCFormatError(ValueError):
    """An annotation file or split list does not follow the 100DOH VOC layout."""


@dataclass
class HandAnnotation:
    box: tuple[float, float, float, float]  # x1, y1, x2, y2, 0-based pixels
    contact_state: int  # 0 no contact, 1 self, 2 other person, 3 portable object, 4 stationary
    hand_side: int | None
    difficult: bool = False

    @property
    def label(self) -> int:
        return LABEL_CONTACT if self.contact_state > 0 else LABEL_NO_CONTACT


@dataclass
class ImageAnnotation:
    image_id: str
    filename: str
    width: int
    height: int
    hands: list[HandAnnotation] = field(default_factory=list)


def _text(node: ET.Element, tag: str, path: Path, default: str | None = None) -> str:
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        if default is not None:
            return default
        raise VOCFormatError(f"{path}: <{node.tag}> has no <{tag}>")
    return child.text.strip()


def parse_voc_xml(path: str | Path) -> ImageAnnotation:
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as e:
        raise VOCFormatError(f"{path}: cannot parse VOC XML: {e}") from e
    size = root.find("size")
    if size is None:
        raise VOCFormatError(f"{path}: no <size>")
    try:
        width, height = int(float(_text(size, "width", path))), int(float(_text(size, "height", path)))
    except ValueError as e:
        raise VOCFormatError(f"{path}: bad <size>: {e}") from e
    ann = ImageAnnotation(path.stem, _text(root, "filename", path, default=f"{path.stem}.jpg"), width, height)
    for obj in root.findall("object"):
        if _text(obj, "name", path).lower() != "hand":
            continue  # targetobject: not a class of the 3-class model
        bnd = obj.find("bndbox")
        if bnd is None:
            raise VOCFormatError(f"{path}: a hand object has no <bndbox>")
        try:
            x1, y1, x2, y2 = (float(_text(bnd, t, path)) for t in ("xmin", "ymin", "xmax", "ymax"))
            state = int(float(_text(obj, "contactstate", path)))
            side_text = _text(obj, "handside", path, default="")
            side = int(float(side_text)) if side_text else None
            difficult = bool(int(float(_text(obj, "difficult", path, default="0"))))
        except ValueError as e:
            raise VOCFormatError(f"{path}: bad hand fields: {e}") from e
        if not 0 <= state <= 4:
            raise VOCFormatError(f"{path}: contactstate {state} is not in 0..4")
        box = (max(0.0, x1 - 1), max(0.0, y1 - 1), min(float(width), x2), min(float(height), y2))
        if box[2] <= box[0] or box[3] <= box[1]:
            raise VOCFormatError(f"{path}: empty hand box {x1, y1, x2, y2}")
        ann.hands.append(HandAnnotation(box, state, side, difficult))
    return ann


def read_split(root: str | Path, split: str) -> list[str]:
    path = Path(root) / "ImageSets" / "Main" / f"{split}.txt"
    if not path.is_file():
        raise VOCFormatError(f"split list {path} does not exist (expected <root>/ImageSets/Main/{split}.txt)")
    ids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise VOCFormatError(f"split list {path} is empty")
    return ids


def write_voc_xml(path: str | Path, ann: ImageAnnotation) -> None:
    """Write an annotation in the 100DOH layout (used to build datasets and by tests)."""

    root = ET.Element("annotation")
    ET.SubElement(root, "filename").text = ann.filename
    size = ET.SubElement(root, "size")
    for tag, v in (("width", ann.width), ("height", ann.height), ("depth", 3)):
        ET.SubElement(size, tag).text = str(v)
    for hand in ann.hands:
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = "hand"
        ET.SubElement(obj, "difficult").text = str(int(hand.difficult))
        ET.SubElement(obj, "contactstate").text = str(hand.contact_state)
        ET.SubElement(obj, "handside").text = "" if hand.hand_side is None else str(hand.hand_side)
        bnd = ET.SubElement(obj, "bndbox")
        x1, y1, x2, y2 = hand.box
        for tag, coord in (("xmin", x1 + 1), ("ymin", y1 + 1), ("xmax", x2), ("ymax", y2)):
            ET.SubElement(bnd, tag).text = f"{coord:g}"
    atomic_write_bytes(path, ET.tostring(root, encoding="utf-8"))


def target_of(ann: ImageAnnotation, index: int) -> dict[str, torch.Tensor]:
    boxes = torch.tensor([h.box for h in ann.hands], dtype=torch.float32).reshape(-1, 4)
    return {
        "boxes": boxes,
        "labels": torch.tensor([h.label for h in ann.hands], dtype=torch.int64),
        "difficult": torch.tensor([h.difficult for h in ann.hands], dtype=torch.bool),
        "image_id": torch.tensor(index),
    }


class VOCHandDataset(torch.utils.data.Dataset):
    """(image float (3,H,W) in [0,1], target dict) pairs of one split; optional horizontal flip."""

    def __init__(self, root: str | Path, split: str, hflip: float = 0.0) -> None:
        self.root = Path(root)
        if not (self.root / "Annotations").is_dir():
            raise VOCFormatError(f"{self.root} is not a VOC root (no Annotations/ folder)")
        self.ids = read_split(self.root, split)
        self.annotations = [parse_voc_xml(self.root / "Annotations" / f"{i}.xml") for i in self.ids]
        self.hflip = hflip

    def __len__(self) -> int:
        return len(self.ids)

    def image_path(self, index: int) -> Path:
        return self.root / "JPEGImages" / self.annotations[index].filename

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        # deferred: torchvision at import
        from torchvision.io import ImageReadMode, decode_image

        path = self.image_path(index)
        try:
            image = decode_image(str(path), mode=ImageReadMode.RGB)
        except (RuntimeError, OSError) as e:
            raise VOCFormatError(f"{path}: cannot decode image: {e}") from e
        target = target_of(self.annotations[index], index)
        if self.hflip > 0 and torch.rand(()) < self.hflip:
            image = image.flip(-1)
            w = image.shape[-1]
            boxes = target["boxes"].clone()
            boxes[:, 0], boxes[:, 2] = w - target["boxes"][:, 2], w - target["boxes"][:, 0]
            target["boxes"] = boxes
        return image.float().div_(255.0), target


def collate(batch: list) -> tuple:
    return tuple(zip(*batch))
