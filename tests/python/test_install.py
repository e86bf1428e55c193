"""`pip install --no-build-isolation .` into a throwaway virtual environment, then `import xattn`.

The environment is made with --system-site-packages (Debian's python3-torch and python3-h5py
stay visible) and without its own pip (the system's pip runs inside it, so no network and no
wheel cache are needed); pip installs into the environment, never into the system (PEP 668).
XATTN_CMAKE_BUILD_DIR (set by ctest to its build folder) makes setup.py build the op library
there, a no-op when it is up to date, instead of configuring a second build. The installed
package is imported from another folder with neither PYTHONPATH nor XATTN_OPS set: it must find
its own libxattn_ops.so and run prefill with return_lse.

Run: XATTN_CMAKE_BUILD_DIR=build python3 tests/python/test_install.py
Exits 77 (skipped) when torch, venv or pip is missing.
"""

import os
import subprocess
import sys
import tempfile
import unittest

try:
    import torch  # noqa: F401
    import venv
except ImportError as missing:
    print(f"skipped: {missing} (install python3-torch and python3-venv to run this test)")
    sys.exit(77)
if subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True).returncode:
    print("skipped: pip is not installed for this Python (install python3-pip)")
    sys.exit(77)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CHECK = """
import os, torch, xattn
here = os.path.dirname(xattn.__file__)
assert os.path.isfile(os.path.join(here, "libxattn_ops.so")), os.listdir(here)
q, k, v = torch.randn(1, 4, 200, 64), torch.randn(1, 2, 200, 64), torch.randn(1, 2, 200, 64)
out, lse = xattn.ops.prefill(q, k, v, [0.9] * 4, block_size=64, return_lse=True)
assert out.shape == q.shape and lse.shape == (1, 4, 200)
print(xattn.__file__)
"""


def inherit_running_environment(python):
    """When this test itself runs inside a virtual environment (the GPU machine's torch lives in
    one), --system-site-packages reaches only the base interpreter's packages: a .pth file makes
    the running environment's site-packages (torch, h5py) visible in the new one too."""
    if sys.prefix == sys.base_prefix:
        return
    import site
    inner = subprocess.run([python, "-c", "import site; print(site.getsitepackages()[0])"],
                           capture_output=True, text=True, check=True).stdout.strip()
    with open(os.path.join(inner, "xattn-test-parent.pth"), "w") as pth:
        pth.write("\n".join(site.getsitepackages()) + "\n")


class InstallTest(unittest.TestCase):
    def test_pip_install_into_a_venv(self):
        with tempfile.TemporaryDirectory() as folder:
            env_dir = os.path.join(folder, "venv")
            venv.create(env_dir, system_site_packages=True, with_pip=False)
            python = os.path.join(env_dir, "bin", "python")
            inherit_running_environment(python)
            env = {k: v for k, v in os.environ.items()
                   if k not in ("PYTHONPATH", "XATTN_OPS", "PIP_USER", "PIP_PREFIX")}
            env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
            install = subprocess.run(
                [python, "-m", "pip", "install", "--no-build-isolation", "--no-deps",
                 "--no-index", "--no-cache-dir", REPO_ROOT],
                cwd=folder, env=env, capture_output=True, text=True, timeout=1200)
            self.assertEqual(install.returncode, 0, install.stdout[-3000:] + install.stderr)
            check = subprocess.run([python, "-c", CHECK], cwd=folder, env=env,
                                   capture_output=True, text=True, timeout=300)
            self.assertEqual(check.returncode, 0, check.stdout + check.stderr)
            self.assertTrue(check.stdout.strip().startswith(env_dir), check.stdout)
            # The system interpreter does not see it: the install stayed in the environment.
            outside = subprocess.run([sys.executable, "-c", "import xattn"], cwd=folder,
                                     env=env, capture_output=True, text=True, timeout=300)
            self.assertNotEqual(outside.returncode, 0)


if __name__ == "__main__":
    unittest.main()
