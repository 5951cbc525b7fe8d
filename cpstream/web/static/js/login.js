// The login page: posts the pasted operator token; the session cookie it gets back
// (HttpOnly) is what the dashboard's requests carry from then on.

const form = document.getElementById("login");
const error = document.getElementById("login-error");

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  error.hidden = true;
  const token = document.getElementById("token").value.trim();
  let response;
  try {
    response = await fetch("/login", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify({ token }),
      cache: "no-store",
    });
  } catch {
    error.textContent = "The control plane is unreachable.";
    error.hidden = false;
    return;
  }
  if (response.ok) {
    location.assign("/");
    return;
  }
  error.textContent =
    response.status === 401 ? "That is not the operator token." : `Login failed (HTTP ${response.status}).`;
  error.hidden = false;
});
