"""``python -m dense_face.train.dataset_builder`` = ``dense-face build-dataset``."""
import sys

from .command import main

sys.exit(main())
