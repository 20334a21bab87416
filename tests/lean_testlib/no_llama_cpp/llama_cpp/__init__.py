"""Test shim: put tests/lean_testlib/no_llama_cpp first on a host's PYTHONPATH and `import llama_cpp` fails
exactly as it does where llama-cpp-python is not installed."""
raise ImportError("No module named 'llama_cpp' (hidden by the Lean test shim tests/lean_testlib/no_llama_cpp)",
                  name="llama_cpp")
