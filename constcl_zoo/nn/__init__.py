"""The networks: the R3D backbone (:mod:`.backbone`), the heads (:mod:`.heads`), the layers that follow TF
(:mod:`.layers`), the three networks a checkpoint loads as (:mod:`.model`) and the weights' preprocessing
(:mod:`.preprocess`)."""
