"""Data: the per-sample protocol every dataset honours (`samples`: names, labels, ids, files of sample i) and one
reader module per layout: image folders and unlabelled ones (`folders`), P1 folders, class sub-folders and
layout detection (`labeled`), Office-Home CSVs and splits (`office_home`), P2 satellite pairs (`satellite`)
and the multispectral GeoTIFFs they may hold, read by rasterio window by window (`geotiff`);
samples that do not decode left out (`unreadable`), class-balanced subsets (`subset`), image decoding and
resizing (`images`), the land-cover mask colours and the one mask reader (`masks`), the decoded-image cache that
any reader can sit behind (`cache`, `data.cache`) and its file (`cachefile`), seeded synthetic data sets in every
layout (`synth`, behind `dlcvkit data synth`), scikit-learn's digits in the P1 layout (`digits`) and IDX files of
the MNIST family (`idx`, behind `dlcvkit data export`).

Readers decode and resize to uint8 tensors (GeoTIFFs: float32 raw band values) in DataLoader workers; augmentation happens later, on the device.
"""
