"""The KServe v2 inference protocol (what Triton speaks; ``tritonclient.http`` works unchanged), HTTP/REST with the
binary tensor data extension: ``GET /v2``, ``/v2/health/{live,ready}``, ``/v2/models/NAME[/versions/1]``
(metadata), ``.../ready``, ``.../config`` and ``POST .../infer`` with JSON or binary tensor data
(``Inference-Header-Content-Length``). Errors are ``{"error": ...}``: 404 an unknown model or version, 400 a bad
request (the 422 of the ``/v1`` route included), 408 / 413 the limits."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import orjson
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response

from .common import whole_body
from .service import EmbeddingService

V2_DATATYPES = {"tensor(float)": "FP32", "tensor(float16)": "FP16", "tensor(double)": "FP64"}
TAGS = ["KServe v2"]


def v2_tensor(arg, datatype: str) -> dict[str, Any]:
    """KServe v2 metadata of an ORT input/output: name, datatype, shape (``-1`` for dynamic axes)."""
    return {"name": arg.name, "datatype": datatype, "shape": [d if isinstance(d, int) else -1 for d in arg.shape]}


def _config_dims(tensor: dict[str, Any]) -> dict[str, Any]:
    """A tensor of the metadata as the model configuration lists it (batch axis implicit)."""
    return {"name": tensor["name"], "data_type": f"TYPE_{tensor['datatype']}", "dims": tensor["shape"][1:]}


def _parameters(obj: dict[str, Any], name: str) -> dict[str, Any]:
    """The ``parameters`` object of a request, input or output (``{}`` when absent)."""
    parameters = obj.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise HTTPException(400, f"{name}: 'parameters' must be an object, got {parameters!r}")
    return parameters


class KServeV2:
    """The v2 routes of ``service``'s model, named ``model_name`` (version ``"1"``)."""

    def __init__(self, service: EmbeddingService, model_name: str) -> None:
        self.service, self.model_name = service, model_name
        session = service.embedder.session
        self.input, self.output = session.get_inputs()[0], session.get_outputs()[0]
        self.input_label = f"input {self.input.name!r}"
        self.output_datatype = V2_DATATYPES.get(self.output.type, self.output.type)
        # check_clips makes every input float32
        self.inputs = [{**v2_tensor(self.input, "FP32"), "shape": [-1, *service.embedder.clip_shape]}]
        self.outputs = [v2_tensor(self.output, self.output_datatype)]

    def add_to(self, app: FastAPI) -> None:
        """Register the routes on ``app``."""
        app.add_api_route("/v2", self.v2_server_metadata, methods=["GET"])
        app.add_api_route("/v2/health/live", self.v2_live, methods=["GET"])
        app.add_api_route("/v2/health/ready", self.v2_ready, methods=["GET"])
        for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
            app.add_api_route(prefix, self.v2_model_metadata, methods=["GET"], tags=TAGS)
            app.add_api_route(prefix + "/ready", self.v2_model_ready, methods=["GET"], tags=TAGS)
            app.add_api_route(prefix + "/config", self.v2_model_config, methods=["GET"], tags=TAGS)
            app.add_api_route(prefix + "/infer", self.v2_infer, methods=["POST"], tags=TAGS)

    def _model(self, name: str, version: str | None) -> None:
        if name != self.model_name:
            raise HTTPException(404, f"unknown model {name!r}; this server serves {self.model_name!r}")
        if version not in (None, "1"):
            raise HTTPException(404, f"model {name!r} has no version {version!r}; it has version '1'")

    async def v2_server_metadata(self) -> JSONResponse:
        from constcl_zoo import __version__

        return JSONResponse({"name": "constcl-zoo", "version": __version__,
                             "extensions": ["binary_tensor_data", "model_configuration"]})

    async def v2_live(self) -> Response:
        return Response(status_code=200 if self.service.batcher.alive else 503)

    async def v2_ready(self) -> Response:
        return Response(status_code=200 if self.service.ready() else 503)

    async def v2_model_metadata(self, name: str, version: str | None = None) -> JSONResponse:
        self._model(name, version)
        return JSONResponse({"name": self.model_name, "versions": ["1"], "platform": "onnxruntime_onnx",
                             "inputs": self.inputs, "outputs": self.outputs})

    async def v2_model_ready(self, name: str, version: str | None = None) -> Response:
        self._model(name, version)
        return Response(status_code=200 if self.service.ready() else 503)

    async def v2_model_config(self, name: str, version: str | None = None) -> JSONResponse:
        self._model(name, version)
        return JSONResponse({"name": self.model_name, "platform": "onnxruntime_onnx", "backend": "onnxruntime",
                             "max_batch_size": self.service.config.max_clips,
                             "input": [_config_dims(t) for t in self.inputs],
                             "output": [_config_dims(t) for t in self.outputs]})

    async def v2_infer(self, request: Request, name: str, version: str | None = None) -> Response:
        self._model(name, version)
        try:
            return await self.service.within_limit(self._infer(request))
        except HTTPException as exc:
            if exc.status_code == 422:  # the protocol answers bad inputs with 400
                raise HTTPException(400, exc.detail) from None
            raise

    async def _infer(self, request: Request) -> Response:
        metrics = self.service.metrics
        with metrics.timed("read"):
            body = await whole_body(request)
        with metrics.timed("validate", cpu=True):
            clips, binary, request_id = self.parse(body, request.headers)
        out = await self.service.embed(clips, self.input_label)
        with metrics.timed("encode", cpu=True):
            return self._reply(out, binary, request_id)

    def _reply(self, out: np.ndarray, binary: bool, request_id: Any) -> Response:
        output: dict[str, Any] = {"name": self.output.name, "datatype": self.output_datatype, "shape": out.shape}
        reply: dict[str, Any] = {"model_name": self.model_name, "model_version": "1", "outputs": [output]}
        if request_id is not None:
            reply["id"] = request_id
        if not binary:
            output["data"] = out.ravel()
            return Response(orjson.dumps(reply, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")
        output["parameters"] = {"binary_data_size": out.nbytes}
        head = orjson.dumps(reply)
        return Response(head + out.tobytes(), media_type="application/octet-stream",
                        headers={"Inference-Header-Content-Length": str(len(head))})

    def parse(self, body: bytes | memoryview, headers) -> tuple[np.ndarray, bool, Any]:
        """``(clips, binary reply, request id)`` of a v2 ``infer`` body: a JSON header, then (with the header
        ``Inference-Header-Content-Length``) the binary tensor data."""
        request, view, json_size = self._json(body, headers)
        tensor = self._tensor(request)
        clips = self._clips(tensor, view, json_size, len(body))
        return clips, self._binary_output(request), request.get("id")

    def _json(self, body: bytes | memoryview, headers) -> tuple[Any, memoryview, int]:
        """The request's JSON, the body as a ``memoryview`` and the JSON's size in bytes."""
        if headers.get("content-encoding", "identity").lower() != "identity":
            raise HTTPException(400, f"Content-Encoding {headers['content-encoding']!r} is not supported; send the "
                                     f"request uncompressed")
        length = headers.get("inference-header-content-length")
        if length is not None and not (length.isdigit() and int(length) <= len(body)):
            raise HTTPException(400, f"Inference-Header-Content-Length {length!r} is not a byte count within the "
                                     f"body of {len(body)} bytes")
        json_size = len(body) if length is None else int(length)
        view = memoryview(body)
        try:
            request = orjson.loads(view[:json_size])
        except orjson.JSONDecodeError as exc:
            raise HTTPException(400, f"the request's JSON is not readable ({exc})") from None
        return request, view, json_size

    def _tensor(self, request: Any) -> dict[str, Any]:
        """The request's one input tensor, its datatype and shape checked (400), its clip count and shape too."""
        inputs = request.get("inputs") if isinstance(request, dict) else None
        if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict) \
                or inputs[0].get("name") != self.input.name:
            names = [i.get("name") for i in inputs if isinstance(i, dict)] if isinstance(inputs, list) else inputs
            raise HTTPException(400, f"the request must have 'inputs' with one tensor named "
                                     f"{self.input.name!r}; got {names!r}")
        tensor, name = inputs[0], self.input_label
        if tensor.get("datatype") != "FP32":
            raise HTTPException(400, f"{name}: datatype must be FP32, got {tensor.get('datatype')!r}")
        shape = tensor.get("shape")
        if not isinstance(shape, list) or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0
                                                  for n in shape):
            raise HTTPException(400, f"{name}: 'shape' must be a list of sizes, got {shape!r}")
        self.service.reader.check_header(tuple(shape), np.dtype(np.float32), name)
        return tensor

    def _clips(self, tensor: dict[str, Any], view: memoryview, json_size: int, size: int) -> np.ndarray:
        """The tensor's clips: its binary data after the JSON (a view), or its JSON ``data``."""
        name, shape, reader = self.input_label, tensor["shape"], self.service.reader
        binary_size = _parameters(tensor, name).get("binary_data_size")
        if binary_size is not None:
            if type(binary_size) is not int or json_size + binary_size != size:
                raise HTTPException(400, f"{name}: binary_data_size {binary_size!r} does not match the "
                                         f"{size - json_size} bytes after the JSON header")
            return reader.clips(view, json_size, tuple(shape), np.dtype("<f4"), False, name,
                                "the binary data does not match the shape", "binary_data_size")
        if "data" in tensor and json_size == size:
            try:
                array = np.asarray(tensor["data"], dtype=np.float32)
            except (ValueError, TypeError) as exc:
                raise HTTPException(400, f"{name}: 'data' must be numbers ({exc})") from None
            if array.size != math.prod(shape):
                raise HTTPException(400, f"{name}: 'data' holds {array.size} values; shape {shape} needs "
                                         f"{math.prod(shape)}")
            return reader.checked(array.reshape(shape) if len(shape) == 5 else array.reshape(1, *shape), name)
        raise HTTPException(400, f"{name}: give either 'data' or parameters.binary_data_size with the "
                                 f"tensor's bytes after the JSON header (and nothing else after it)")

    def _binary_output(self, request: dict[str, Any]) -> bool:
        """Whether the reply carries the output as binary data (the request's or the output's parameters)."""
        binary = bool(_parameters(request, "the request").get("binary_data_output", False))
        outputs = request.get("outputs") or []
        if not isinstance(outputs, list):
            raise HTTPException(400, f"'outputs' must be a list of requested outputs, got {outputs!r}")
        for wanted in outputs:
            if not isinstance(wanted, dict) or wanted.get("name") != self.output.name:
                raise HTTPException(400, f"unknown output {wanted!r}; the model's output is "
                                         f"{self.output.name!r}")
            binary = bool(_parameters(wanted, f"output {self.output.name!r}").get("binary_data", binary))
        return binary
