"""The reader's side: review decisions (:mod:`.decisions`), the scan page (:mod:`.page`, pictures in
:mod:`.images`), the cohort page (:mod:`.cohort`) and page screenshots (:mod:`.screenshot`).

Reads result folders through :mod:`microbleeds.io` and their meaning from :mod:`microbleeds.contract`;
never imports the detector, so importing it loads no numba, SimpleITK or scikit-image.
"""
