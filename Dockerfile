# convtrans on a CPU-only PyTorch image: `docker build -t convtrans . && docker run --rm -i convtrans --help`
FROM python:3.11-slim AS torch-cpu
RUN pip install --no-cache-dir torch --index-url https://download.pytorch.org/whl/cpu

FROM torch-cpu
WORKDIR /opt/convtrans
COPY pyproject.toml README.md ./
COPY convtrans ./convtrans
COPY models ./models
RUN pip install --no-cache-dir . && convtrans --help \
    && echo "Ein Mann fährt Fahrrad." | convtrans translate \
    && echo "#Person1#: Would you like to come to my birthday party on Saturday? #Person2#: I'd love to." | convtrans summarize
ENTRYPOINT ["convtrans"]
CMD ["--help"]
