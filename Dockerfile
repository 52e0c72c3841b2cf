# The jobrec image: Airflow 3 with the project, Java 17 for Spark, and pyspark installed. The same image runs
# the Airflow services and the Spark master/worker, so Python, pyspark and the jobrec code match everywhere.
ARG AIRFLOW_VERSION=3.3.2
ARG PYTHON_VERSION=3.11
FROM apache/airflow:${AIRFLOW_VERSION}-python${PYTHON_VERSION}
ARG AIRFLOW_VERSION

USER root
RUN apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless procps \
    && apt-get clean && rm -rf /var/lib/apt/lists/*
ENV JAVA_HOME=/usr/lib/jvm/java-17-openjdk-amd64 \
    JOBREC_HOME=/data
RUN mkdir -p /data && chown -R airflow:root /data

USER airflow
COPY --chown=airflow:root pyproject.toml README.md* /opt/jobrec/
COPY --chown=airflow:root glmix_core /opt/jobrec/glmix_core
COPY --chown=airflow:root pipeline /opt/jobrec/pipeline
COPY --chown=airflow:root retrieval /opt/jobrec/retrieval
COPY --chown=airflow:root serving_store /opt/jobrec/serving_store
COPY --chown=airflow:root dags /opt/airflow/dags
# Pin Airflow to the image's version so pip never up- or downgrades it while installing the project.
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" /opt/jobrec
WORKDIR /opt/airflow
