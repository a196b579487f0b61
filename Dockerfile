# bilm on an official TensorFlow image; the container runs the test suite on start.
#   GPU (default): docker build -t bilm .
#                  docker run --gpus all --rm bilm
#   CPU:           docker build --build-arg BASE_TAG=2.21.0 -t bilm:cpu .
#                  docker run --rm bilm:cpu
#   Your data:     docker run --gpus all --rm -v "$PWD:/data" bilm bilm embed /data/in.txt /data/out.hdf5
ARG BASE_TAG=2.21.0-gpu
FROM tensorflow/tensorflow:${BASE_TAG}

WORKDIR /opt/bilm
COPY . .
# TensorFlow comes with the base image, so only bilm (this checkout) and its test extras are installed.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[test]"

CMD ["python", "-m", "pytest", "-q", "tests"]
