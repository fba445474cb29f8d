"""The metric columns of every table, and what each means (the JSON and Markdown legends)."""

METRICS = ("face_detected", "id_cos", "id_cos_heldout", "clip_t", "clip_i", "pose_mae", "yaw_err", "pitch_err",
           "roll_err", "dlib_dist", "dlib_match")
METRIC_TEXT = {
    "face_detected": "face detection rate",
    "id_cos": "ArcFace cosine, generated vs the conditioning reference photo",
    "id_cos_heldout": "ArcFace cosine, generated vs the mean embedding of the identity's other photos",
    "clip_t": "CLIP cosine, generated image vs prompt",
    "clip_i": "CLIP cosine, generated image vs reference photo",
    "pose_mae": "mean of |Δyaw|, |Δpitch|, |Δroll| (degrees), target vs measured pose",
    "yaw_err": "|Δyaw| (degrees)", "pitch_err": "|Δpitch| (degrees)", "roll_err": "|Δroll| (degrees)",
    "dlib_dist": "dlib 128-d descriptor distance, generated vs reference photo (< 0.6: same person)",
    "dlib_match": "share of faces with dlib distance < 0.6",
}
