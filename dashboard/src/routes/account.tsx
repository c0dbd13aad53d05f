export { ForgotPasswordPage, ResetPasswordPage, VerifyEmailPage } from '@/features/auth/components/account-pages';
