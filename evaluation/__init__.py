"""Benchmark readers, the two published metric protocols, baselines, ``maskahand eval`` and ``ground``.

benchmark.py   Entry / Benchmark, the reader registry (load_benchmark), AnnotationError
opra.py        OPRA in the Afformer authors' layout; assistq.py: AssistQ Buttons
epic.py        EPIC-Hotspots (Interaction Hotspots release), each annotated image paired with its test clips
metrics.py     256 x 256 (Afformer) and 28 x 28 (Interaction Hotspots) rules, plain tensor functions
groundtruth.py both protocols' ground truth, cached beside the annotations
predictor.py   the interface a model implements to be scored (and its registry: --model NAME)
baselines.py   Center Bias (the Hotspots `gaussian` map) and uniform
clips.py       an entry's image and clips, sampled as the authors' evaluation samples them
evaluate.py    predict + score, one process or torchrun; report.py: metrics.json, results.md, overlays
ground.py      one video + one image -> heatmap PNG or moving overlay (the authors' demo.py)
overlay.py     the moving overlay: demo windows, per-window maps painted beside the video, PyAV encoding
"""
