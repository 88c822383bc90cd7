from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SHARED_MOBILE = SHARED / "data" / "mobile"
SHARED_MBV2 = SHARED / "weights" / "mobilenet_v2_imagenet_features.pth"


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A small generated ImageFolder with train/ and val/ (classes mobile, other). Read-only by convention."""
    from edgecls.synthetic import make_image_folder

    return make_image_folder(tmp_path_factory.mktemp("tiny_data"), counts={"mobile": 12, "other": 20}, size=64)


@pytest.fixture()
def shared_mobile() -> Path:
    if not (SHARED_MOBILE / "val").is_dir():
        pytest.skip("../shared/data/mobile is absent")
    return SHARED_MOBILE


@pytest.fixture()
def shared_mbv2() -> Path:
    if not SHARED_MBV2.is_file():
        pytest.skip("../shared/weights/mobilenet_v2_imagenet_features.pth is absent")
    return SHARED_MBV2
