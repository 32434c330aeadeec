import { ApiError, call } from './api.ts';
import { byId, el } from './forms.ts';
import { isRefusedLink, showView, takeLinkToken } from './link-token.ts';

const VIEWS = ['verify', 'verified', 'invalid', 'incomplete'] as const;

interface Verified {
  email: string;
  email_verified: boolean;
}

function start(): void {
  const token = takeLinkToken();
  if (!token) {
    showView(VIEWS, 'incomplete', false);
    return;
  }
  showView(VIEWS, 'verify', false);
  const section = byId('verify');
  const button = byId<HTMLButtonElement>('verify-button');
  const problem = byId('verify-error');
  // Only a click posts the token: mail scanners and link previews that load the page consume nothing.
  button.addEventListener('click', () => {
    button.disabled = true;
    section.setAttribute('aria-busy', 'true');
    problem.hidden = true;
    problem.replaceChildren();
    call<Verified>('POST', '/email/verify', { token })
      .then((answer) => {
        byId('verified-email').textContent = answer.email;
        showView(VIEWS, 'verified', true);
      })
      .catch((error: unknown) => {
        if (isRefusedLink(error)) {
          showView(VIEWS, 'invalid', true);
          return;
        }
        const message =
          error instanceof ApiError
            ? error.message
            : 'The request failed: check your connection and try again.';
        problem.append(el('p', { text: message }));
        problem.hidden = false;
        problem.focus();
      })
      .finally(() => {
        button.disabled = false;
        section.removeAttribute('aria-busy');
      });
  });
}

start();
