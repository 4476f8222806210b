"""Seeded synthetic labelled video built from real footage: one scene renderer (:mod:`.scene`) and writers for
each task's on-disk layout — AVA v2.2 (:mod:`training.tasks.localization.synthetic`), GOT-10k tracking sequences
(:mod:`.tracking`) and class-folder recognition videos (:mod:`.recognition`)."""
