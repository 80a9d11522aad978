"""Model metadata inside a .tflite file, as MediaPipe Tasks' ImageClassifier (Android, iOS, web,
Python) and the LiteRT metadata tools read it: name, description, version; the input image
(RGB, its size, the normalization MediaPipe applies before feeding it); one entry per output,
the class names as the associated labels file ``labels.txt`` packed into the file.

How it is written: the metadata is a flatbuffer of MediaPipe's metadata schema (the generated
Python classes ``mediapipe.tasks.metadata.metadata_schema_py_generated`` of the mediapipe wheel),
stored as the model's ``TFLITE_METADATA`` buffer through the TFLite schema classes of
ai_edge_litert, with the labels file appended as an uncompressed zip archive (the layout
MediaPipe's ModelMetadataExtractor reads). MediaPipe's own metadata writer cannot be used: in the
mediapipe 1.2.2 wheel it fails at import (its ``_pywrap_metadata_version`` extension is missing),
and tflite-support, the other writer, needs protobuf 3.20 (TensorFlow 2.21 needs protobuf 5+).
So writing metadata needs mediapipe installed (``pip install keras-resnet[mediapipe]``); without
it ``unavailable()`` says why and the export writes the file without metadata, saying so.

Input: every TFLite artifact takes RGB (a model of grey images converts in its graph, see
``ExportSource.serving_function``). Its pixels are the raw 0..255 values: the model normalizes
itself, so the metadata's normalization is mean 0, std 1 (MediaPipe feeds a float input
``(pixel - mean) / std``), and the full-integer int8 variant takes uint8 pixels as they are
(quantization scale 1, zero point 0; MediaPipe feeds a uint8 input unnormalized).

Output: the files keep both outputs (logits and probabilities); MediaPipe requires an entry for
each and reports each as a classification head named after it. The ``probabilities`` head is
the one to read (scores in 0..1, what ``training.predict`` reports); the manifest names it.
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np

from export.model_io import ExportError

METADATA_NAME = "TFLITE_METADATA"  # the name MediaPipe and LiteRT look the buffer up by
METADATA_IDENTIFIER = b"M001"  # metadata_schema.fbs: file_identifier
MODEL_IDENTIFIER = b"TFL3"  # schema.fbs: file_identifier
# Every field written here is in the metadata schema's first version (metadata_schema.fbs lists
# what later versions added); a reader older than this refuses the file.
MIN_PARSER_VERSION = "1.0.0"
LABELS_FILE = "labels.txt"
SCORE_OUTPUT = "probabilities"
PIXEL_RANGE = (0.0, 255.0)
BUFFER_ALIGNMENT = 16  # schema.fbs: Buffer.data (force_align: 16)


def unavailable() -> str | None:
    """Why metadata cannot be written here (mediapipe is missing), or None."""
    try:
        from mediapipe.tasks.metadata import metadata_schema_py_generated  # noqa: F401
    except ImportError as err:
        return (f"TFLite metadata needs mediapipe's metadata schema ({err}); "
                "pip install 'mediapipe==1.2.2' (the keras-resnet[mediapipe] extra)")
    return None


def describe(source, variant: str, input_dtype: str) -> dict:
    """What the metadata of one TFLite variant of ``source`` (an ExportSource) says: the
    manifest's record of it, and what ``write`` packs."""
    h, w, c = source.shape
    config = getattr(source.reference, "get_config", dict)()
    arch = config.get("arch", source.model.name)
    stem, width = config.get("stem"), config.get("width")
    name = " ".join(str(p) for p in (arch, stem and f"{stem} stem", width and f"width {width}")
                    if p)
    from keras_resnet import __version__

    return {
        "name": f"keras_resnet {name}",
        "description": (f"Image classifier ({source.num_classes} classes) exported by "
                        f"keras_resnet {__version__} ({variant} weights). Input: RGB image "
                        f"{h}x{w}, raw pixels 0..255"
                        + (", converted to grey inside the model" if c == 1 else "")
                        + f"; outputs: logits and {SCORE_OUTPUT} (softmax)."),
        "version": __version__,
        "min_parser_version": MIN_PARSER_VERSION,
        "input": {"color_space": "RGB", "height": h, "width": w, "dtype": input_dtype,
                  "model_channels": c, "grey_from_rgb": "ITU-R 601-2 luma" if c == 1 else None,
                  "normalization": {"mean": [0.0], "std": [1.0]}, "range": list(PIXEL_RANGE)},
        "score_output": SCORE_OUTPUT,
        "labels_file": LABELS_FILE,
    }


def write(path, record: dict, class_names) -> None:
    """Packs ``record`` (from ``describe``) and ``class_names`` into the .tflite file ``path``,
    through a temporary file renamed over it."""
    reason = unavailable()
    if reason:
        raise ExportError(reason)
    path = Path(path)
    model = _read_model(path.read_bytes())
    metadata = _metadata_flatbuffer(record, _output_names(model))
    data = _with_metadata(model, metadata)
    labels = "".join(f"{n}\n" for n in class_names).encode()
    buffer = io.BytesIO(data)
    buffer.seek(0, io.SEEK_END)
    with zipfile.ZipFile(buffer, "a", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr(LABELS_FILE, labels)
    tmp = path.with_name(f".{path.name}.metadata")
    tmp.write_bytes(buffer.getvalue())
    os.replace(tmp, path)


def _read_model(data: bytes):
    from ai_edge_litert import schema_py_generated as tfl

    if not tfl.Model.ModelBufferHasIdentifier(data, 0):
        raise ExportError("not a TFLite flatbuffer: cannot add metadata to it")
    return tfl.ModelT.InitFromObj(tfl.Model.GetRootAs(data, 0))


def _output_names(model) -> list[str]:
    """The signature names of the first subgraph's outputs, in the subgraph's order."""
    (signature,) = model.signatureDefs
    by_tensor = {m.tensorIndex: m.name.decode() for m in signature.outputs}
    return [by_tensor[i] for i in model.subgraphs[0].outputs]


def _with_metadata(model, metadata: bytes) -> bytes:
    import flatbuffers
    from ai_edge_litert import schema_py_generated as tfl

    if any(m.name.decode() == METADATA_NAME for m in model.metadata or []):
        raise ExportError("the TFLite file already holds metadata")
    buffer = tfl.BufferT()
    buffer.data = np.frombuffer(metadata, np.uint8)
    model.buffers.append(buffer)
    entry = tfl.MetadataT()
    entry.name, entry.buffer = METADATA_NAME, len(model.buffers) - 1
    model.metadata = [*(model.metadata or []), entry]
    model.buffers = [_Aligned(b) for b in model.buffers]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), MODEL_IDENTIFIER)
    return bytes(builder.Output())


class _Aligned:
    """A TFLite buffer packed with its data at a multiple of ``BUFFER_ALIGNMENT`` bytes, as the
    converter writes it: the interpreter maps aligned weights from the file and copies
    unaligned ones (the schema's ``force_align: 16``, which the generated Python ignores)."""

    def __init__(self, buffer):
        if buffer.data is not None and not isinstance(buffer.data, np.ndarray):
            buffer.data = np.asarray(buffer.data, np.uint8)
        self._buffer = buffer

    def Pack(self, builder):  # noqa: N802  (the name flatbuffers' object API calls)
        if self._buffer.data is not None and self._buffer.data.size:
            # Padding so that the data ends, and therefore starts, aligned: the vector written
            # next then needs none of its own.
            builder.Prep(BUFFER_ALIGNMENT, self._buffer.data.size)
        return self._buffer.Pack(builder)


def _metadata_flatbuffer(record: dict, outputs: list[str]) -> bytes:
    import flatbuffers
    from mediapipe.tasks.metadata import metadata_schema_py_generated as md

    model = md.ModelMetadataT()
    model.name, model.description = record["name"], record["description"]
    model.version, model.minParserVersion = record["version"], record["min_parser_version"]
    subgraph = md.SubGraphMetadataT()
    subgraph.inputTensorMetadata = [_image_input(md, record["input"])]
    subgraph.outputTensorMetadata = [_scores(md, name, record) for name in outputs]
    model.subgraphMetadata = [subgraph]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), METADATA_IDENTIFIER)
    return bytes(builder.Output())


def _image_input(md, spec: dict):
    tensor = md.TensorMetadataT()
    tensor.name = "image"
    tensor.description = (f"RGB image {spec['height']}x{spec['width']}, raw pixels "
                          f"{spec['range'][0]:g}..{spec['range'][1]:g}")
    tensor.content = md.ContentT()
    tensor.content.contentPropertiesType = md.ContentProperties.ImageProperties
    tensor.content.contentProperties = md.ImagePropertiesT()
    tensor.content.contentProperties.colorSpace = md.ColorSpaceType.RGB
    norm = md.NormalizationOptionsT()
    norm.mean, norm.std = spec["normalization"]["mean"], spec["normalization"]["std"]
    unit = md.ProcessUnitT()
    unit.optionsType, unit.options = md.ProcessUnitOptions.NormalizationOptions, norm
    tensor.processUnits = [unit]
    tensor.stats = _stats(md, *spec["range"])
    return tensor


def _scores(md, name: str, record: dict):
    tensor = md.TensorMetadataT()
    tensor.name = name
    tensor.description = ("class probabilities (softmax of the logits)" if name == SCORE_OUTPUT
                          else f"class {name}")
    tensor.content = md.ContentT()
    tensor.content.contentPropertiesType = md.ContentProperties.FeatureProperties
    tensor.content.contentProperties = md.FeaturePropertiesT()
    if name == SCORE_OUTPUT:
        tensor.stats = _stats(md, 0.0, 1.0)
    labels = md.AssociatedFileT()
    labels.name, labels.description = record["labels_file"], "class names, one a line"
    labels.type = md.AssociatedFileType.TENSOR_AXIS_LABELS
    tensor.associatedFiles = [labels]
    return tensor


def _stats(md, low: float, high: float):
    stats = md.StatsT()
    stats.min, stats.max = [low], [high]
    return stats
