"""One module per job: its config dataclass, `run(config) -> summary` (which writes summary.json) and the
bookkeeping only it needs. `jobs/*.py` are argparse shims over these; fer_ray.api calls them too.

- preprocess.py: PreprocessConfig, run (videos and image sets -> face shards)
- annotate.py: AnnotateConfig (nests the face stages' FacesConfig), run (face stages -> logits -> per video)
- train.py: run (the datasets, built through fer_ray.raydata, handed to fer_ray.train.launch)
"""
