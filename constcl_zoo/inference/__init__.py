"""Running a loaded model on videos: streamed decoding (:mod:`.video`), which frames a clip takes (:mod:`.clips`),
sliding windows and whole-video embeddings (:mod:`.embed`), the precision plan (:mod:`.precision`), person
detectors (:mod:`.detection`) and annotated H.264 output (:mod:`.visualize`)."""
