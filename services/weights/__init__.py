"""Model weights from anywhere: Hugging Face repositories, URLs (https, s3, gs), OCI images, into one cache.

``cache`` (the content-addressed cache shared by processes and pods), ``download`` (one file, resumable and
verified), ``remotes`` (HTTP, S3, GCS), ``hub`` (a Hub repository resolved with huggingface_hub), ``archives``,
``oci``, ``fetch`` (a source made local), ``detect`` (what a repository's files are: task and backend).
"""
