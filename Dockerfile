# One image for every Python process of compose.yaml: the Cloud Run emulator (which starts the demo
# apps' revisions as child processes of itself), `remediator serve` and its one-shot
# `remediator db upgrade`, the job that deploys the demo service, and the load generator. Each
# service in compose.yaml gives its own command; health is checked by compose.yaml, per service,
# because each one answers on a different port and path.

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /build

# The runtime dependencies alone first, read from pyproject.toml, so that a change to the code does
# not download and install them again: this layer is rebuilt only when pyproject.toml changes. No
# optional extras: the test tools and the Cloud Monitoring exporter stay out of the image.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > requirements.txt \
    && pip install -r requirements.txt

# The packages pyproject.toml's [tool.setuptools.packages.find] includes, and the readme its
# metadata names. tests/compose checks that this list and pyproject.toml agree.
COPY README.md ./
COPY incidents ./incidents
COPY collector ./collector
COPY analyzer ./analyzer
COPY actuator ./actuator
COPY demo_apps ./demo_apps
COPY remediator ./remediator
RUN pip install . && rm -rf /build

# compose.yaml's demo-service job and the load generator run this helper (see its docstring).
COPY compose/demo_service.py /opt/remediator/compose/demo_service.py

# Nothing runs as root. A fixed uid, so that the owner of files it writes to a volume, and who may
# read a mounted secret, do not depend on the order of accounts in the base image.
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/remediator remediator
USER 10001:10001
WORKDIR /home/remediator

CMD ["remediator", "--help"]
