"""Data: readers for each course layout (`datasets`), image decoding and resizing (`images`), the land-cover mask
colours and the one mask reader (`masks`), the Office-Home folder's splits (`office_home`), seeded synthetic data
sets in every layout (`synth`, behind `dlcvkit data synth`), scikit-learn's digits in the P1 layout (`digits`),
the decoded-image cache that any reader can sit behind (`cache`, `data.cache`), IDX files of the MNIST family
(`idx`, behind `dlcvkit data export`) and class-balanced subsets (`subset`).

Readers decode and resize to uint8 tensors in DataLoader workers; augmentation happens later, on the device.
"""
