"""Box labels in the formats labelling tools read and write: YOLO txt, COCO JSON, and Pascal VOC XML (LabelImg).

Everything is converted through `ImageLabels` (pixel boxes with the dataset's class ids). Class names decide the id
on import, so a file from another tool that numbers classes differently still lands on the right class; a name the
dataset does not have is an error naming the file. Imported boxes are measured against the size of the image itself
(`sizes`), not the size the file declares: LabelImg writes 0 x 0 when it could not read an image, and a size from
another copy of the image would rescale every box. A box outside its image is an error naming the file and box.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

import numpy as np

from cityguard.evaluation.detection import Boxes
from cityguard.evaluation.loaders import checked_box

LABEL_FORMATS = ("yolo", "coco", "voc")

Sizes = dict[str, tuple[int, int]]  # image file name -> (width, height) of the image itself


@dataclass(frozen=True)
class ImageLabels:
    """The labelled boxes of one image; no boxes is a background image."""

    name: str  # image file name inside the dataset
    width: int
    height: int
    boxes: Boxes  # pixels, class ids of the dataset's names


def class_id_of(name: str, names: dict[int, str], where: str) -> int:
    ids = {class_name: class_id for class_id, class_name in names.items()}
    if name not in ids:
        raise ValueError(f"{where}: class {name!r} is not one of the dataset's classes")
    return ids[name]


def yolo_text(labels: ImageLabels) -> str:
    """`class cx cy w h` lines, normalised to the image size; empty for a background image."""
    xyxy = labels.boxes.xyxy
    size = np.array([labels.width, labels.height], dtype=float)
    centre = (xyxy[:, :2] + xyxy[:, 2:]) / 2 / size
    extent = (xyxy[:, 2:] - xyxy[:, :2]) / size
    return "".join(f"{class_id} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}\n"
                   for class_id, (cx, cy), (w, h) in zip(labels.boxes.class_id.tolist(), centre, extent, strict=True))


def to_coco(images: list[ImageLabels], names: dict[int, str]) -> dict:
    """One COCO detection document; category ids are the dataset's class ids, boxes are [x, y, w, h]."""
    document = {"images": [], "annotations": [],
                "categories": [{"id": class_id, "name": name} for class_id, name in sorted(names.items())]}
    for image_id, labels in enumerate(images, 1):
        document["images"].append({"id": image_id, "file_name": labels.name, "width": labels.width,
                                   "height": labels.height})
        for (x1, y1, x2, y2), class_id in zip(labels.boxes.xyxy.tolist(), labels.boxes.class_id.tolist(), strict=True):
            document["annotations"].append({
                "id": len(document["annotations"]) + 1, "image_id": image_id, "category_id": class_id,
                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    return document


def image_size(name: str, declared: tuple[int, int] | None, sizes: Sizes | None) -> tuple[int, int]:
    """The size boxes are checked and normalised against: the image's own (`sizes`, by file name: tools write the
    folder they found it in before it), else the one declared."""
    if sizes is not None:
        if Path(name).name not in sizes:
            raise ValueError(f"image {name} is not in the dataset")
        return sizes[Path(name).name]
    width, height = declared
    if width <= 0 or height <= 0:
        raise ValueError(f"image {name} has size {width}x{height}")
    return width, height


def labelled_boxes(boxes: list[tuple[str, list, int]], width: int, height: int) -> Boxes:
    """(where in the file, xyxy, class id) of each box, checked against the width x height image."""
    checked = []
    for where, xyxy, class_id in boxes:
        try:
            checked.append(checked_box(xyxy, class_id, width, height))
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
    return Boxes.of([xyxy for xyxy, _ in checked], [class_id for _, class_id in checked])


def from_coco(document: dict, names: dict[int, str], source: str, sizes: Sizes | None = None) -> list[ImageLabels]:
    """Every image of a COCO document, with its boxes; categories are matched to the dataset by name."""
    try:
        categories = {c["id"]: class_id_of(c["name"], names, source) for c in document["categories"]}
        boxes: dict[int, list[tuple[str, list, int]]] = {image["id"]: [] for image in document["images"]}
        for annotation in document["annotations"]:
            if annotation["image_id"] not in boxes:
                raise ValueError(f"annotation {annotation['id']} names unknown image {annotation['image_id']}")
            if annotation["category_id"] not in categories:
                raise ValueError(f"annotation {annotation['id']} names unknown category {annotation['category_id']}")
            try:
                x, y, w, h = (float(value) for value in annotation["bbox"])
            except (TypeError, ValueError):
                raise ValueError(f"annotation {annotation['id']}: bbox {annotation['bbox']!r} is not x, y, w, h "
                                 "numbers") from None
            boxes[annotation["image_id"]].append((f"annotation {annotation['id']}", [x, y, x + w, y + h],
                                                  categories[annotation["category_id"]]))
        images = []
        for image in document["images"]:
            declared = (int(image["width"]), int(image["height"])) if sizes is None else None
            width, height = image_size(image["file_name"], declared, sizes)
            images.append(ImageLabels(image["file_name"], width, height,
                                      labelled_boxes(boxes[image["id"]], width, height)))
        return images
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{source}: not a COCO detection document (missing or malformed {exc})") from None
    except ValueError as exc:
        if str(exc).startswith(source):
            raise
        raise ValueError(f"{source}: {exc}") from None


def to_voc_xml(labels: ImageLabels, names: dict[int, str]) -> str:
    """The Pascal VOC annotation LabelImg reads and writes for one image."""
    root = ElementTree.Element("annotation")
    ElementTree.SubElement(root, "filename").text = labels.name
    size = ElementTree.SubElement(root, "size")
    for tag, value in (("width", labels.width), ("height", labels.height), ("depth", 3)):
        ElementTree.SubElement(size, tag).text = str(value)
    ElementTree.SubElement(root, "segmented").text = "0"
    for (x1, y1, x2, y2), class_id in zip(labels.boxes.xyxy.tolist(), labels.boxes.class_id.tolist(), strict=True):
        item = ElementTree.SubElement(root, "object")
        ElementTree.SubElement(item, "name").text = names.get(class_id, str(class_id))
        for tag, value in (("pose", "Unspecified"), ("truncated", "0"), ("difficult", "0")):
            ElementTree.SubElement(item, tag).text = value
        box = ElementTree.SubElement(item, "bndbox")
        for tag, value in (("xmin", x1), ("ymin", y1), ("xmax", x2), ("ymax", y2)):
            ElementTree.SubElement(box, tag).text = f"{value:.2f}"
    ElementTree.indent(root)
    return ElementTree.tostring(root, encoding="unicode") + "\n"


def from_voc_xml(path: Path, names: dict[int, str], sizes: Sizes | None = None) -> ImageLabels:
    """One Pascal VOC annotation file (LabelImg's save format)."""
    try:
        root = ElementTree.parse(path).getroot()
        name = root.findtext("filename", "").strip() or f"{Path(path).stem}.jpg"
        boxes = []
        for number, item in enumerate(root.iter("object"), 1):
            box = item.find("bndbox")
            boxes.append((f"object {number}", [box.findtext(tag) for tag in ("xmin", "ymin", "xmax", "ymax")],
                          class_id_of(item.findtext("name", "").strip(), names, str(path))))
        size = root.find("size")
        declared = (int(size.findtext("width")), int(size.findtext("height"))) if sizes is None else None
        width, height = image_size(name, declared, sizes)
        return ImageLabels(name, width, height, labelled_boxes(boxes, width, height))
    except ElementTree.ParseError as exc:
        raise ValueError(f"{path}: not XML: {exc}") from None
    except (AttributeError, TypeError) as exc:
        raise ValueError(f"{path}: not a Pascal VOC annotation (size or bndbox missing: {exc})") from None
    except ValueError as exc:
        if str(exc).startswith(str(path)):
            raise
        raise ValueError(f"{path}: {exc}") from None
