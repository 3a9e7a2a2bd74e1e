"""Fashion-MNIST baseline of benchmarks/notes_real.md: logistic regression on the raw pixels (scaled to 0..1),
fitted on the 60,000 training images, scored once on the 10,000 test images.

    python benchmarks/fashion_raw_pixels.py /usr/share/datasets/fashion-mnist
"""

import sys
import time
from pathlib import Path

from sklearn.linear_model import LogisticRegression

from dlcvkit.data.idx import read_split

source = Path(sys.argv[1] if len(sys.argv) > 1 else "/usr/share/datasets/fashion-mnist")
(x_train, y_train), (x_test, y_test) = read_split(source, "train"), read_split(source, "t10k")
start = time.perf_counter()
model = LogisticRegression(max_iter=200).fit(x_train.reshape(len(x_train), -1) / 255, y_train)
accuracy = model.score(x_test.reshape(len(x_test), -1) / 255, y_test)
print(f"logistic regression on raw pixels: test accuracy {accuracy:.4f} ({time.perf_counter() - start:.0f} s)")
