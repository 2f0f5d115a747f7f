"""The serve image in Amazon ECR: repository, login, build and push, skipped when the tag is there.

Tags are immutable and derived from the image's inputs (dogbooth.platforms.kubesteps.source_hash), so an
unchanged tree never rebuilds, and a pushed tag always means the same image.
"""

from __future__ import annotations

import logging

from dogbooth.core.errors import CommandFailed
from dogbooth.platforms import plan as p
from dogbooth.platforms.kubesteps import image_steps
from dogbooth.render.image import EKS_PLATFORM
from dogbooth.settings.cluster import EksTarget
from dogbooth.settings.profiles import Profile

log = logging.getLogger("dogbooth.platforms.ecr")


def ensure_repository(ctx: p.Context, repo: str, region: str) -> None:
    try:
        ctx.runner.run(["aws", "ecr", "describe-repositories", "--repository-names", repo, "--region", region])
    except CommandFailed as e:
        if "RepositoryNotFoundException" not in e.stderr:
            raise
        ctx.runner.run(
            [
                "aws",
                "ecr",
                "create-repository",
                "--repository-name",
                repo,
                "--region",
                region,
                *["--image-tag-mutability", "IMMUTABLE", "--image-scanning-configuration", "scanOnPush=true"],
            ]
        )


def check_image(ctx: p.Context, repo: str, tag: str, region: str) -> None:
    """Sets the `image_missing` flag that gates login, build and push."""
    try:
        ctx.runner.run(
            [
                "aws",
                "ecr",
                "describe-images",
                "--repository-name",
                repo,
                "--image-ids",
                f"imageTag={tag}",
                "--region",
                region,
            ]
        )
        ctx.flags["image_missing"] = False
        log.info("%s:%s is already in ECR; not rebuilding", repo, tag)
    except CommandFailed as e:
        if "ImageNotFoundException" not in e.stderr:
            raise
        ctx.flags["image_missing"] = True


def steps(profile: Profile, t: EksTarget, repo: str, image: str) -> list[p.Step]:
    registry, tag = image.split("/", 1)[0], image.rsplit(":", 1)[1]
    create = (
        f"  || aws ecr create-repository --repository-name {repo} --region {t.region} "
        "--image-tag-mutability IMMUTABLE --image-scanning-configuration scanOnPush=true"
    )
    return [
        p.python(
            "image",
            f"ECR repository {repo} (created if missing; tags immutable)",
            [f"$ aws ecr describe-repositories --repository-names {repo} --region {t.region}", create],
            lambda ctx: ensure_repository(ctx, repo, t.region),
        ),
        p.python(
            "image",
            f"is {tag} already pushed?",
            [f"$ aws ecr describe-images --repository-name {repo} --image-ids imageTag={tag}"],
            lambda ctx: check_image(ctx, repo, tag, t.region),
        ),
        p.command(
            "image",
            "ECR login token",
            ["aws", "ecr", "get-login-password", "--region", t.region],
            capture="ecr_password",
            only_if="image_missing",
        ),
        p.command(
            "image",
            "docker login to ECR",
            ["docker", "login", "--username", "AWS", "--password-stdin", registry],
            input="${ecr_password}",
            input_label="secret: the token above",
            only_if="image_missing",
        ),
        *image_steps(profile, image, platform_flag=EKS_PLATFORM, only_if="image_missing"),
    ]
