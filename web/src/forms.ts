import { ApiError } from './api.ts';

/** Looks an element up by id, failing loudly: the page and this script are built together. */
export function byId<T extends HTMLElement = HTMLElement>(id: string): T {
  const element = document.getElementById(id);
  if (!element) throw new Error(`#${id} is missing from the page`);
  return element as T;
}

/** Makes an element with text content only: nothing here ever parses markup. */
export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  options: { className?: string; text?: string; attributes?: Record<string, string> } = {},
  ...children: (Node | string)[]
): HTMLElementTagNameMap[K] {
  const element = document.createElement(tag);
  if (options.className) element.className = options.className;
  if (options.text !== undefined) element.textContent = options.text;
  for (const [name, value] of Object.entries(options.attributes ?? {})) element.setAttribute(name, value);
  element.append(...children);
  return element;
}

/** A refusal the page raises itself, before asking the API, shown the same way as the API's. */
export class FormProblem extends Error {
  readonly fields: ReadonlyMap<string, string>;

  constructor(message: string, fields: ReadonlyMap<string, string> = new Map()) {
    super(message);
    this.fields = fields;
  }
}

const status = () => byId('status');

/** Announces a result politely (role="status"). */
export function announce(text: string): void {
  const region = status();
  region.textContent = '';
  // A fresh node, so that the same text said twice is announced twice.
  region.append(el('p', { text }));
}

/** Clears a form's refusal: its summary, each field's message and mark. */
export function clearErrors(form: HTMLFormElement): void {
  const summary = form.querySelector<HTMLElement>('.form-error');
  if (summary) {
    summary.hidden = true;
    summary.textContent = '';
  }
  for (const field of form.querySelectorAll<HTMLElement>('[aria-invalid]')) {
    field.removeAttribute('aria-invalid');
    const hint = field.getAttribute('data-hint');
    if (hint) field.setAttribute('aria-describedby', hint);
    else field.removeAttribute('aria-describedby');
  }
  for (const message of form.querySelectorAll<HTMLElement>('.field-error')) {
    message.hidden = true;
    message.textContent = '';
  }
}

/**
 * Shows the API's message at the top of the form and moves focus there (it is also an alert region, so a screen
 * reader says it), and marks each field the API named as invalid with its own message beside it.
 */
function showErrors(form: HTMLFormElement, message: string, fields: ReadonlyMap<string, string>): void {
  const summary = form.querySelector<HTMLElement>('.form-error');
  for (const [name, text] of fields) {
    const field = form.elements.namedItem(name);
    if (!(field instanceof HTMLElement)) continue;
    field.setAttribute('aria-invalid', 'true');
    const error = form.querySelector<HTMLElement>(`#${CSS.escape(field.id)}-error`);
    if (error) {
      error.textContent = text;
      error.hidden = false;
      const hint = field.getAttribute('data-hint');
      field.setAttribute('aria-describedby', hint ? `${error.id} ${hint}` : error.id);
    }
  }
  if (summary) {
    summary.append(el('p', { text: message }));
    summary.hidden = false;
    summary.focus();
  }
}

/**
 * Handles a form's submission: errors cleared, the button disabled while the request runs, the API's refusal shown
 * and focused. The handler reads the form's fields by name.
 */
export function handleForm(form: HTMLFormElement, handler: (fields: FormData) => Promise<void>): void {
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const button = form.querySelector<HTMLButtonElement>('button[type="submit"]');
    runInForm(form, button, () => handler(new FormData(form)));
  });
}

/**
 * Runs a button's task that belongs to a form (a passkey prompt beside a code field), the way a submission runs:
 * its refusal in the form's error summary, the button disabled meanwhile.
 */
export function runInForm(
  form: HTMLFormElement,
  button: HTMLButtonElement | null,
  task: () => Promise<void>,
): void {
  clearErrors(form);
  if (button) button.disabled = true;
  form.setAttribute('aria-busy', 'true');
  task()
    .catch((error: unknown) => {
      if (error instanceof ApiError || error instanceof FormProblem) {
        showErrors(form, error.message, error.fields);
      } else {
        showErrors(form, 'The request failed: check your connection and try again.', new Map());
      }
    })
    .finally(() => {
      if (button) button.disabled = false;
      // A disabled button loses the focus to the body: it comes back where it was, while the form is still shown.
      if (button && document.activeElement === document.body && form.offsetParent !== null) button.focus();
      form.removeAttribute('aria-busy');
    });
}

/** Reads a text field of the form. */
/**
 * Refuses a value over `limit` characters as the server counts them, in code points (an emoji is one). A field's
 * maxlength counts UTF-16 units, two for an emoji, so fields take twice the limit and this says what is too long
 * (found from outside: 3,000 emoji pasted into a message were cut to 2,000 without a word).
 */
export function refuseOverLength(value: string, limit: number, field: string, what: string): void {
  const length = [...value].length;
  if (length > limit) {
    const message = `${what} can be at most ${limit} characters long; this one has ${length}.`;
    throw new FormProblem(message, new Map([[field, message]]));
  }
}

export function text(fields: FormData, name: string): string {
  const value = fields.get(name);
  return typeof value === 'string' ? value : '';
}

/** A 6-digit code as `otp`, anything else as a recovery code: the fields that take either. */
export function secondFactorOf(value: string): { otp: string } | { recovery_code: string } {
  const compact = value.replace(/\s/g, '');
  return /^\d{6}$/.test(compact) ? { otp: compact } : { recovery_code: value.trim() };
}
