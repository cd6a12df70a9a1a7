"""The compact dtypes a split's arrays may be stored in, and the float32 values they stand for.

A large dataset (the thesis's 34000 256x256 crops: 17.8 GB as float32) fits in memory, on disk
and on the device when its arrays are stored narrower than the float32 the network computes in.
Two encodings are defined:

* uint8: the value k stands for the float32 nearest to k / 255 (8-bit pixels, and binary edge
  maps as 0 and 255). Decoding looks k up in `UINT8_VALUES` rather than dividing, so it is exact
  and the same on every backend (a division could be compiled into a multiplication by 1/255).
* float16: the value itself, widened to float32 (exact).

Every other dtype (float32 images, int32 labels) is used as it is. The host decodes with
`jaxshrink.data.decode` (numpy), the compiled programs with `jaxshrink.core.train.decode`; both
read this table, so they agree bit for bit. It lives in the core, below the data package, since
training decodes what the data package stores.
"""

from __future__ import annotations

import numpy as np

# The float32 value each uint8 k stands for: k / 255 rounded once, as an 8-bit pixel converts.
UINT8_VALUES = (np.arange(256) / 255).astype(np.float32)
UINT8_VALUES.flags.writeable = False
