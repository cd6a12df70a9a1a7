"""The shrunk network made physically smaller and cheaper to deploy.

* `export`: the compact network without the disabled units, checked to reproduce the
  masked one; `quantize` and `lowrank`: fewer bits and factorized layers;
* `onnx`: export to ONNX and its check with onnxruntime; `latency`: measured latency;
* `stage`: the deploy stage that builds, scores, exports and times every form;
  `checks`: the validation of the `deploy` section.
"""
