using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Broker.Client;

/// <summary>
/// How a client checks the broker's TLS certificate on <c>https://</c> addresses. Without a <see cref="CaFile"/> the
/// system's trusted roots decide (a certificate from a public CA); with one, only the CAs in that file do, and the
/// system store is not consulted (a private CA). The certificate must name the host the client dials either way.
/// </summary>
public sealed record BrokerTlsOptions
{
    /// <summary>PEM file of the CA certificate(s) to trust instead of the system store.</summary>
    public string? CaFile { get; init; }

    /// <summary>The CA certificates of <see cref="CaFile"/>, read once; null when none is set.</summary>
    internal X509Certificate2Collection? LoadTrustedRoots()
    {
        if (string.IsNullOrWhiteSpace(CaFile))
            return null;
        var roots = new X509Certificate2Collection();
        try
        {
            roots.ImportFromPemFile(CaFile);
        }
        catch (Exception error) when (error is IOException or UnauthorizedAccessException or CryptographicException)
        {
            throw new ArgumentException($"CA file '{CaFile}' could not be read: {error.Message}", error);
        }
        return roots.Count > 0 ? roots : throw new ArgumentException($"CA file '{CaFile}' holds no PEM certificate");
    }
}
