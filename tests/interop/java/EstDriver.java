import java.io.FileInputStream;
import java.io.FileReader;
import java.net.InetAddress;
import java.net.Socket;
import java.security.KeyPair;
import java.security.KeyPairGenerator;
import java.security.KeyStore;
import java.security.PrivateKey;
import java.security.SecureRandom;
import java.security.cert.CertificateFactory;
import java.security.cert.TrustAnchor;
import java.security.cert.X509Certificate;
import java.security.spec.ECGenParameterSpec;
import java.util.ArrayList;
import java.util.Base64;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;

import javax.net.ssl.KeyManager;
import javax.net.ssl.KeyManagerFactory;
import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLSession;
import javax.net.ssl.SSLSocket;
import javax.net.ssl.SSLSocketFactory;
import javax.net.ssl.X509TrustManager;

import org.bouncycastle.asn1.ASN1ObjectIdentifier;
import org.bouncycastle.asn1.pkcs.PrivateKeyInfo;
import org.bouncycastle.asn1.x500.X500Name;
import org.bouncycastle.cert.X509CertificateHolder;
import org.bouncycastle.cert.jcajce.JcaX509CertificateConverter;
import org.bouncycastle.est.CACertsResponse;
import org.bouncycastle.est.CSRAttributesResponse;
import org.bouncycastle.est.CSRRequestResponse;
import org.bouncycastle.est.ESTAuth;
import org.bouncycastle.est.ESTRequest;
import org.bouncycastle.est.ESTService;
import org.bouncycastle.est.ESTSourceConnectionListener;
import org.bouncycastle.est.EnrollmentResponse;
import org.bouncycastle.est.HttpAuth;
import org.bouncycastle.est.Source;
import org.bouncycastle.est.jcajce.JcaJceUtils;
import org.bouncycastle.est.jcajce.JsseESTServiceBuilder;
import org.bouncycastle.est.jcajce.SSLSocketFactoryCreator;
import org.bouncycastle.jce.provider.BouncyCastleProvider;
import org.bouncycastle.operator.jcajce.JcaContentSignerBuilder;
import org.bouncycastle.pkcs.PKCS10CertificationRequest;
import org.bouncycastle.pkcs.jcajce.JcaPKCS10CertificationRequestBuilder;

/**
 * Bouncy Castle's EST client (org.bouncycastle.est) driving kipuka through a whole matrix in one JVM.
 *
 * Usage: EstDriver MATRIX.properties
 *
 * The properties name the server (host:port), the trust anchor PEM, the TLS versions and labels
 * ("" is the unlabeled path) and, per label, an OTP entity and its OTP ("user.LABEL", "otp.LABEL").
 * For every (TLS version, label) it runs, in order: cacerts, csrattrs, enroll (HTTP Basic sent only
 * after the server's 401 challenge, by BC's HttpAuth), reenroll (mTLS with the certificate just
 * enrolled, no Basic) and serverkeygen (Basic after the challenge). Each operation prints one JSON
 * object on its own line: what BC received and what the TLS connections were (protocol, cipher,
 * whether an Authorization header or a client certificate went out), for the Python side to check.
 * A failing operation prints ok=false with the exception instead; the run goes on.
 */
public final class EstDriver {

    private final String server;
    private final X509TrustManager[] trust;

    private EstDriver(String server, X509TrustManager[] trust) {
        this.server = server;
        this.trust = trust;
    }

    public static void main(String[] args) throws Exception {
        // BC's CertPath trust manager asks for the "BC" provider by name; added last, so JSSE
        // and the device keys keep the JDK's own providers.
        java.security.Security.addProvider(new BouncyCastleProvider());
        Properties p = new Properties();
        try (FileReader r = new FileReader(args[0])) {
            p.load(r);
        }
        Set<TrustAnchor> anchors = new HashSet<>();
        try (FileInputStream in = new FileInputStream(p.getProperty("trust"))) {
            for (java.security.cert.Certificate c : CertificateFactory.getInstance("X.509").generateCertificates(in)) {
                anchors.add(new TrustAnchor((X509Certificate) c, null));
            }
        }
        EstDriver d = new EstDriver(p.getProperty("server"), JcaJceUtils.getCertPathTrustManager(anchors, null));
        for (String tls : p.getProperty("tls").split(",")) {
            for (String label : p.getProperty("labels").split(",", -1)) {
                d.cell(tls, label, p.getProperty("user." + label), p.getProperty("otp." + label));
            }
        }
    }

    /** The five operations for one (TLS version, label). */
    private void cell(String tls, String label, String user, String otp) {
        String tag = tls.replace("TLSv", "t").replace(".", "");
        // the OTP's entity, then "." (kipuka binds names to the entity id with a boundary)
        String cn = user + "." + tag + (label.isEmpty() ? "" : "-" + label) + ".example.com";
        ESTService est = service(tls, label, null);

        run("cacerts", tls, label, out -> {
            CACertsResponse r = est.getCACerts();
            out.put("trusted", r.isTrusted());
            out.put("certs", encoded(ESTService.storeToArray(r.getCertificateStore())));
            session(out, r.getSession());
            return null;
        });

        run("csrattrs", tls, label, out -> {
            CSRRequestResponse r = est.getCSRAttributes();
            out.put("has_attributes", r.hasAttributesResponse());
            if (r.hasAttributesResponse()) {
                CSRAttributesResponse a = r.getAttributesResponse();
                List<Object> oids = new ArrayList<>();
                List<Object> attributes = new ArrayList<>();
                for (ASN1ObjectIdentifier oid : a.getRequirements()) {
                    oids.add(oid.getId());
                    if (a.isAttribute(oid)) {
                        attributes.add(oid.getId());
                    }
                }
                out.put("requirements", oids);
                out.put("attributes", attributes);
                out.put("der", b64(a.getEncoded()));
            }
            session(out, r.getSession());
            return null;
        });

        Object[] enrolled = run("enroll", tls, label, out -> {
            KeyPair kp = ecKey();
            Recorder rec = new Recorder();
            EnrollmentResponse r = est.simpleEnroll(false, csr(cn, kp), challenged(rec, user, otp));
            X509CertificateHolder[] certs = completed(r);
            out.put("spki", b64(kp.getPublic().getEncoded()));
            out.put("certs", encoded(certs));
            out.put("connections", rec.connections);
            return new Object[] {kp, certs[0]};
        });

        run("reenroll", tls, label, out -> {
            if (enrolled == null) {
                throw new IllegalStateException("no certificate: enroll failed");
            }
            KeyPair kp = (KeyPair) enrolled[0];
            X509Certificate cert =
                new JcaX509CertificateConverter().getCertificate((X509CertificateHolder) enrolled[1]);
            ESTService mtls = service(tls, label, keyManagers(kp.getPrivate(), cert));
            Recorder rec = new Recorder();
            // a renewal with the same key: the CSR names the subject of the certificate presented
            EnrollmentResponse r = mtls.simpleEnroll(true, csr(cn, kp), rec.only());
            out.put("spki", b64(kp.getPublic().getEncoded()));
            out.put("previous", b64(cert.getEncoded()));
            out.put("certs", encoded(completed(r)));
            out.put("connections", rec.connections);
            return null;
        });

        run("serverkeygen", tls, label, out -> {
            KeyPair throwaway = ecKey();
            Recorder rec = new Recorder();
            EnrollmentResponse r = est.simpleEnrollWithServersideCreation(
                csr(cn.replace(".example.com", "-keygen.example.com"), throwaway), challenged(rec, user, otp));
            X509CertificateHolder[] certs = completed(r);
            PrivateKeyInfo key = r.getPrivateKeyInfo();
            if (key == null) {
                throw new IllegalStateException("no private key in the response");
            }
            out.put("throwaway_spki", b64(throwaway.getPublic().getEncoded()));
            out.put("key", b64(key.getEncoded()));
            out.put("certs", encoded(certs));
            out.put("connections", rec.connections);
            return null;
        });
    }

    // --- one operation --------------------------------------------------------------------------

    private interface Op {
        Object apply(Map<String, Object> out) throws Exception;
    }

    /** Run op, print its JSON line; returns what op returned, or null when it failed. */
    private static Object[] run(String op, String tls, String label, Op body) {
        Map<String, Object> out = new LinkedHashMap<>();
        out.put("op", op);
        out.put("tls", tls);
        out.put("label", label);
        Object result = null;
        long start = System.nanoTime();
        try {
            result = body.apply(out);
            out.put("ok", true);
        } catch (Exception e) {
            out.put("ok", false);
            StringBuilder why = new StringBuilder();
            for (Throwable t = e; t != null; t = t.getCause()) {
                why.append(why.length() == 0 ? "" : " <- ")
                    .append(t.getClass().getName()).append(": ").append(t.getMessage());
            }
            out.put("error", why.toString());
        }
        out.put("ms", (System.nanoTime() - start) / 1_000_000);
        System.out.println(json(out));
        System.out.flush();
        return (Object[]) result;
    }

    private static X509CertificateHolder[] completed(EnrollmentResponse r) {
        if (!r.isCompleted()) {
            throw new IllegalStateException("enrollment not completed (202, retry after " + r.getNotBefore() + ")");
        }
        return ESTService.storeToArray(r.getStore());
    }

    // --- EST service with a pinned TLS version ---------------------------------------------------

    private ESTService service(String tls, String label, KeyManager[] keys) {
        SSLSocketFactoryCreator creator = new SSLSocketFactoryCreator() {
            public SSLSocketFactory createFactory() throws Exception {
                SSLContext ctx = SSLContext.getInstance("TLS");
                ctx.init(keys, trust, new SecureRandom());
                return new Pinned(ctx.getSocketFactory(), tls);
            }

            public boolean isTrusted() {
                return true;
            }
        };
        JsseESTServiceBuilder b = new JsseESTServiceBuilder(server, creator);
        b.withTimeout(30000);
        if (!label.isEmpty()) {
            b.withLabel(label);
        }
        return b.build();
    }

    /** Every socket it makes offers exactly one TLS version. */
    private static final class Pinned extends SSLSocketFactory {
        private final SSLSocketFactory f;
        private final String[] protocols;

        Pinned(SSLSocketFactory f, String protocol) {
            this.f = f;
            this.protocols = new String[] {protocol};
        }

        private Socket pin(Socket s) {
            ((SSLSocket) s).setEnabledProtocols(protocols);
            return s;
        }

        public String[] getDefaultCipherSuites() {
            return f.getDefaultCipherSuites();
        }

        public String[] getSupportedCipherSuites() {
            return f.getSupportedCipherSuites();
        }

        public Socket createSocket() throws java.io.IOException {
            return pin(f.createSocket());
        }

        public Socket createSocket(Socket s, String host, int port, boolean autoClose) throws java.io.IOException {
            return pin(f.createSocket(s, host, port, autoClose));
        }

        public Socket createSocket(String host, int port) throws java.io.IOException {
            return pin(f.createSocket(host, port));
        }

        public Socket createSocket(String host, int port, InetAddress local, int localPort) throws java.io.IOException {
            return pin(f.createSocket(host, port, local, localPort));
        }

        public Socket createSocket(InetAddress host, int port) throws java.io.IOException {
            return pin(f.createSocket(host, port));
        }

        public Socket createSocket(InetAddress host, int port, InetAddress local, int localPort)
                throws java.io.IOException {
            return pin(f.createSocket(host, port, local, localPort));
        }
    }

    private static KeyManager[] keyManagers(PrivateKey key, X509Certificate cert) throws Exception {
        char[] pw = "changeit".toCharArray();
        KeyStore ks = KeyStore.getInstance("PKCS12");
        ks.load(null, null);
        ks.setKeyEntry("device", key, pw, new X509Certificate[] {cert});
        KeyManagerFactory kmf = KeyManagerFactory.getInstance(KeyManagerFactory.getDefaultAlgorithm());
        kmf.init(ks, pw);
        return kmf.getKeyManagers();
    }

    // --- authentication and what went over each connection ---------------------------------------

    /** Records, for each TLS connection a request makes, its session and whether it carried credentials. */
    @SuppressWarnings({"rawtypes", "unchecked"})
    private static final class Recorder implements ESTSourceConnectionListener {
        final List<Object> connections = new ArrayList<>();

        public ESTRequest onConnection(Source source, ESTRequest request) {
            Map<String, Object> c = new LinkedHashMap<>();
            c.put("authorization", request.getHeaders().containsKey("Authorization"));
            session(c, source.getSession());
            connections.add(c);
            return request;
        }

        /** No credentials of its own (mTLS): only records. */
        ESTAuth only() {
            return rb -> rb.withConnectionListener(this);
        }
    }

    /** BC's own HTTP Basic (HttpAuth): sends nothing until a 401 with a Basic challenge for realm "est". */
    private static ESTAuth challenged(Recorder rec, String user, String otp) {
        HttpAuth basic = new HttpAuth("est", user, otp.toCharArray());
        return rb -> {
            rb.withConnectionListener(rec);
            basic.applyAuth(rb);
        };
    }

    private static void session(Map<String, Object> out, Object s) {
        if (!(s instanceof SSLSession)) {
            out.put("protocol", String.valueOf(s));
            return;
        }
        SSLSession session = (SSLSession) s;
        out.put("protocol", session.getProtocol());
        out.put("cipher", session.getCipherSuite());
        out.put("client_certificate", session.getLocalCertificates() != null);
        List<Object> peer = new ArrayList<>();
        try {
            for (java.security.cert.Certificate c : session.getPeerCertificates()) {
                peer.add(b64(c.getEncoded()));
            }
        } catch (Exception e) {
            peer.add("unavailable: " + e);
        }
        out.put("server_chain", peer);
    }

    // --- keys, CSRs, encodings -------------------------------------------------------------------

    private static KeyPair ecKey() throws Exception {
        KeyPairGenerator kpg = KeyPairGenerator.getInstance("EC");
        kpg.initialize(new ECGenParameterSpec("secp256r1"));
        return kpg.generateKeyPair();
    }

    private static PKCS10CertificationRequest csr(String cn, KeyPair kp) throws Exception {
        return new JcaPKCS10CertificationRequestBuilder(new X500Name("CN=" + cn), kp.getPublic())
            .build(new JcaContentSignerBuilder("SHA256withECDSA").build(kp.getPrivate()));
    }

    private static List<Object> encoded(X509CertificateHolder[] certs) throws Exception {
        List<Object> out = new ArrayList<>();
        for (X509CertificateHolder c : certs) {
            out.add(b64(c.getEncoded()));
        }
        return out;
    }

    private static String b64(byte[] der) {
        return Base64.getEncoder().encodeToString(der);
    }

    private static String json(Object v) {
        if (v == null) {
            return "null";
        }
        if (v instanceof Boolean || v instanceof Number) {
            return v.toString();
        }
        if (v instanceof Map) {
            StringBuilder sb = new StringBuilder("{");
            for (Map.Entry<?, ?> e : ((Map<?, ?>) v).entrySet()) {
                sb.append(sb.length() == 1 ? "" : ", ")
                    .append(json(e.getKey().toString())).append(": ").append(json(e.getValue()));
            }
            return sb.append('}').toString();
        }
        if (v instanceof List) {
            StringBuilder sb = new StringBuilder("[");
            for (Object o : (List<?>) v) {
                sb.append(sb.length() == 1 ? "" : ", ").append(json(o));
            }
            return sb.append(']').toString();
        }
        StringBuilder sb = new StringBuilder("\"");
        for (char ch : v.toString().toCharArray()) {
            if (ch == '"' || ch == '\\') {
                sb.append('\\').append(ch);
            } else if (ch < 0x20) {
                sb.append(String.format("\\u%04x", (int) ch));
            } else {
                sb.append(ch);
            }
        }
        return sb.append('"').toString();
    }
}
