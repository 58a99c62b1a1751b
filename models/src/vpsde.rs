//! The VP SDE of classifier_lib (β₀ = 0.1, β₁ = 20, cosine offset s = 0.008) and the σ ↔ VP
//! time mappings (SPEC §3). Generic over f32/f64 so either precision can be reproduced.

/// Floating-point operations used here.
pub trait Real:
    Copy
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
    + std::ops::Neg<Output = Self>
    + PartialOrd
{
    /// From f64.
    fn c(x: f64) -> Self;
    /// Square root.
    fn sqrt(self) -> Self;
    /// Natural log.
    fn ln(self) -> Self;
    /// e^x.
    fn exp(self) -> Self;
    /// Arc cosine.
    fn acos(self) -> Self;
    /// Cosine.
    fn cos(self) -> Self;
    /// To f64.
    fn f64(self) -> f64;
}

macro_rules! real {
    ($t:ty) => {
        impl Real for $t {
            fn c(x: f64) -> Self {
                x as $t
            }
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            fn ln(self) -> Self {
                <$t>::ln(self)
            }
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            fn acos(self) -> Self {
                <$t>::acos(self)
            }
            fn cos(self) -> Self {
                <$t>::cos(self)
            }
            fn f64(self) -> f64 {
                self as f64
            }
        }
    };
}
real!(f32);
real!(f64);

/// The VP SDE.
#[derive(Debug, Clone, Copy)]
pub struct VpSde {
    /// β₀.
    pub beta_0: f64,
    /// β₁.
    pub beta_1: f64,
    /// Cosine-schedule offset s.
    pub s: f64,
    /// T.
    pub t_end: f64,
}

impl Default for VpSde {
    fn default() -> Self {
        VpSde {
            beta_0: 0.1,
            beta_1: 20.0,
            s: 0.008,
            t_end: 1.0,
        }
    }
}

impl VpSde {
    /// `B(t) = ½(β₁−β₀)t² + β₀t`.
    pub fn integral_beta<R: Real>(&self, t: R) -> R {
        R::c(0.5 * (self.beta_1 - self.beta_0)) * t * t + R::c(self.beta_0) * t
    }

    /// `(α(t), std(t)) = (e^{−B/2}, sqrt(1 − e^{−B}))`.
    pub fn marginal_prob<R: Real>(&self, t: R) -> (R, R) {
        let lm = -self.integral_beta(t) * R::c(0.5);
        (lm.exp(), (R::c(1.0) - (lm * R::c(2.0)).exp()).sqrt())
    }

    /// τ with `B(τ) = ln(1 + σ²)`: `(−β₀ + sqrt(β₀² + 2(β₁−β₀)ln(1+σ²)))/(β₁−β₀)`.
    pub fn compute_tau<R: Real>(&self, sigma: R) -> R {
        let d = self.beta_1 - self.beta_0;
        (R::c(-self.beta_0)
            + (R::c(self.beta_0 * self.beta_0) + R::c(2.0 * d) * (R::c(1.0) + sigma * sigma).ln()).sqrt())
            / R::c(d)
    }

    /// `(α(τ), τ, std(τ))` for a VE noise level σ.
    pub fn wve_to_vp<R: Real>(&self, sigma: R) -> (R, R, R) {
        let tau = self.compute_tau(sigma);
        let (mean, std) = self.marginal_prob(tau);
        (mean, tau, std)
    }

    /// `sqrt(e^{B(τ)} − 1)`, the inverse of [`VpSde::compute_tau`].
    pub fn compute_reverse_tau<R: Real>(&self, tau: R) -> R {
        (self.integral_beta(tau).exp() - R::c(1.0)).sqrt()
    }

    /// The cosine-schedule time with the same ᾱ as linear VP time t.
    pub fn t_cos_from_t_lin<R: Real>(&self, t: R) -> R {
        let f0 = ((self.s / (1.0 + self.s)) * std::f64::consts::PI / 2.0)
            .cos()
            .powi(2);
        let arg = R::c(f0.sqrt()) * (-self.integral_beta(t) * R::c(0.5)).exp();
        R::c(self.t_end) * (R::c(1.0 + self.s) * R::c(2.0 / std::f64::consts::PI) * arg.acos() - R::c(self.s))
    }

    /// `A(t) = ln(1 − e^{−B}) + B`.
    pub fn antiderivative<R: Real>(&self, t: R) -> R {
        let b = self.integral_beta(t);
        (R::c(1.0) - (-b).exp()).ln() + b
    }

    /// `Z = A(T) − A(t_min)`.
    pub fn normalizing_constant<R: Real>(&self, t_min: R) -> R {
        self.antiderivative(R::c(self.t_end)) - self.antiderivative(t_min)
    }

    /// Importance-sampled diffusion time for a uniform draw `u`:
    /// `L = ln(1 + exp(Z·u + A(t_min)))`, `t = (−β₀ + sqrt(β₀² + 2(β₁−β₀)L))/(β₁−β₀)`.
    pub fn importance_time<R: Real>(&self, u: R, t_min: R) -> R {
        let z = self.normalizing_constant(t_min);
        let l = (R::c(1.0) + (z * u + self.antiderivative(t_min)).exp()).ln();
        let d = self.beta_1 - self.beta_0;
        (R::c(-self.beta_0) + (R::c(self.beta_0 * self.beta_0) + R::c(2.0 * d) * l).sqrt()) / R::c(d)
    }

    /// Uniform diffusion time `u·(1 − t_min) + t_min`.
    pub fn uniform_time<R: Real>(&self, u: R, t_min: R) -> R {
        u * (R::c(1.0) - t_min) + t_min
    }
}
