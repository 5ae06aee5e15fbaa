"""The local SageMaker: control plane + runtime over SageMaker's wire protocol, with real job and endpoint execution.

Split by concern, moto-style: ``protocol`` (HTTP, JSON 1.1 dispatch, error shapes), ``validation`` (requests
checked against botocore's own service model), ``store`` (durable SQLite state), ``backend`` (the operations:
resources and their lifecycles), ``runners`` (processing/training/tuning jobs as processes with the SageMaker
container contract), ``endpoints`` (inference servers, InvokeEndpoint, data capture, blue/green updates).
"""
