using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Broker.IntegrationTests.Infrastructure;

/// <summary>
/// A private CA and server certificates it signs for 127.0.0.1 and localhost, written as PEM files to a temp folder
/// (as an operator's openssl or cert-manager would leave them); deleted on dispose.
/// </summary>
public sealed class TestCertificates : IDisposable
{
    public TestCertificates()
    {
        Directory.CreateDirectory(Folder);
    }

    public string Folder { get; } = Path.Combine(Path.GetTempPath(), "broker-tls-tests", Guid.NewGuid().ToString("N"));

    public string FileNamed(string name) => Path.Combine(Folder, name);

    /// <summary>A self-signed CA certificate (with its key), written to <paramref name="name"/>.crt.</summary>
    public (X509Certificate2 Certificate, string File) NewCa(string name)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest($"CN=broker test CA {name}", key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
        request.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(request.PublicKey, false));
        var ca = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddDays(1));
        string file = FileNamed(name + ".crt");
        File.WriteAllText(file, ca.ExportCertificatePem());
        return (ca, file);
    }

    /// <summary>An intermediate CA signed by <paramref name="root"/>, with its key (it signs server certificates).</summary>
    public static X509Certificate2 NewIntermediate(X509Certificate2 root)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=broker test intermediate CA", key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, true, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
        request.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(request.PublicKey, false));
        request.CertificateExtensions.Add(X509AuthorityKeyIdentifierExtension.CreateFromCertificate(root, true, false));
        using var certificate = request.Create(root, DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddHours(20), RandomNumberGenerator.GetBytes(8));
        return certificate.CopyWithPrivateKey(key);
    }

    /// <summary>A server certificate for 127.0.0.1 and localhost signed by <paramref name="ca"/>: PEM texts of it and its key.</summary>
    public static (X509Certificate2 Certificate, string CertificatePem, string KeyPem) NewServer(X509Certificate2 ca)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=localhost", key, HashAlgorithmName.SHA256);
        var names = new SubjectAlternativeNameBuilder();
        names.AddIpAddress(IPAddress.Loopback);
        names.AddDnsName("localhost");
        request.CertificateExtensions.Add(names.Build());
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature, true));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.1")], false));
        request.CertificateExtensions.Add(X509AuthorityKeyIdentifierExtension.CreateFromCertificate(ca, true, false));
        byte[] serial = RandomNumberGenerator.GetBytes(16);
        serial[0] &= 0x7f;   // a positive serial number
        using var certificate = request.Create(ca, DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddHours(12), serial);
        return (X509CertificateLoader.LoadCertificate(certificate.RawData), certificate.ExportCertificatePem(), key.ExportPkcs8PrivateKeyPem());
    }

    /// <summary>A server certificate signed by <paramref name="ca"/> written to server.crt and server.key; the certificate.</summary>
    public X509Certificate2 WriteServer(X509Certificate2 ca)
    {
        var (certificate, certificatePem, keyPem) = NewServer(ca);
        File.WriteAllText(ServerCertificateFile, certificatePem);
        File.WriteAllText(ServerKeyFile, keyPem);
        return certificate;
    }

    public string ServerCertificateFile => FileNamed("server.crt");

    public string ServerKeyFile => FileNamed("server.key");

    public void Dispose()
    {
        try
        {
            Directory.Delete(Folder, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
