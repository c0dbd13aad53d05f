import { StrictMode } from 'react';
import { createRoot } from 'react-dom/client';
import { App } from '@/app';
import { api, describeError } from '@/lib/api';
import { loadToken } from '@/lib/session';
import { toast } from '@/lib/toast-store';
import '@/styles.css';

// Server errors reach the user on one path: the toaster.
api.configure({
  getToken: loadToken,
  onError: (error) => toast.error(describeError(error)),
});

const root = document.getElementById('root');
if (root) {
  createRoot(root).render(
    <StrictMode>
      <App />
    </StrictMode>,
  );
}
