"""vcar-serve: an endpoint that speaks TF Serving's REST and gRPC protocols for vcar-export SavedModels.

- model_store.py: the versions of each model under its base path (newest served, polled, a
  half-written or failing version ignored, an old one unloaded after its in-flight requests);
- signature.py: one signature of a loaded version, its input checks and its run;
- json_tensors.py: TF Serving's JSON request and response formats (row and columnar);
- predictor.py: a predict with the limits, batching and metrics, shared by both protocols;
- batching.py, streams.py (server-side state of recurrent models), metrics.py (Prometheus);
- rest.py (Starlette app), grpc_service.py (the official tensorflow-serving-api services);
- config.py (TF Serving's model config file), server.py (runs both), status.py (the errors: a
  canonical code, its HTTP status, one line).
The command is vcar-serve (vcar_tf/cli/serve.py).
"""
