"""Labeling: Ground Truth requests, output manifests, COCO, and immutable dataset versions.

The labeling backend (Ground Truth today) sits behind the request builder and the manifest reader; the dataset side
(``coco``, ``dataset``) only sees ``LabeledFrame`` objects, so another backend can replace Ground Truth.
"""
